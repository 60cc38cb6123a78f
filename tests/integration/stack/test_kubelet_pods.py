"""What the kubelet does for a Pod, checked through the API as a user would see it."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.support.testing import TOOLS_IMAGE, StackHandle, eventually


def apply(stack: StackHandle, namespace: str, manifest: str) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent(manifest))


def pod(stack: StackHandle, namespace: str, name: str) -> dict[str, Any]:
    result = stack.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def phase(stack: StackHandle, namespace: str, name: str) -> str | None:
    return pod(stack, namespace, name).get("status", {}).get("phase")


def events(stack: StackHandle, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(stack.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
        "-o", "json").stdout)["items"]
    return items


def test_a_pod_runs_its_image_as_its_user_with_the_restrictions_it_asks_for(
        stack: StackHandle, namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: locked}}
        spec:
          restartPolicy: Never
          securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            securityContext:
              readOnlyRootFilesystem: true
              allowPrivilegeEscalation: false
              capabilities: {{drop: [ALL]}}
            command: [sh, -c, 'id -u; touch /opt/x 2>/dev/null && echo writable || echo read-only; grep CapEff /proc/self/status']
        """)
    eventually(lambda: phase(stack, namespace, "locked") == "Succeeded", timeout=60,
               what="the pod to succeed")
    uid, root, caps = stack.kubectl("logs", "locked", "-n", namespace).stdout.splitlines()
    assert uid == "65532"  # the image's USER
    assert root == "read-only"
    assert caps.split() == ["CapEff:", "0000000000000000"]


def test_a_readiness_probe_makes_the_pod_ready(stack: StackHandle, namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: probed}}
        spec:
          volumes: [{{name: flag, emptyDir: {{}}}}]
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            volumeMounts: [{{name: flag, mountPath: /flag}}]
            command: [sh, -c, 'sleep 2; touch /flag/ready; exec sleep 600']
            readinessProbe: {{exec: {{command: [test, -e, /flag/ready]}}, periodSeconds: 1}}
        """)

    def ready() -> bool:
        conditions = pod(stack, namespace, "probed").get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    eventually(lambda: phase(stack, namespace, "probed") == "Running", timeout=60,
               what="the pod to run")
    assert not ready()  # the probe has not passed yet: the file comes 2 s after the start
    eventually(ready, timeout=30, what="the readiness probe to pass")


def test_env_and_volumes_come_from_secrets_config_maps_and_the_downward_api(
        stack: StackHandle, namespace: str) -> None:
    stack.kubectl("create", "secret", "generic", "creds", "-n", namespace,
                  "--from-literal=AWS_SECRET_ACCESS_KEY=s3cr3t", "--from-literal=token=t0k")
    stack.kubectl("create", "configmap", "settings", "-n", namespace,
                  "--from-literal=MODE=fast", "--from-literal=config.yaml=epochs: 3")
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: reader, labels: {{team: ml}}}}
        spec:
          restartPolicy: Never
          volumes:
          - {{name: secret, secret: {{secretName: creds, items: [{{key: token, path: auth/token}}]}}}}
          - {{name: config, configMap: {{name: settings}}}}
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            workingDir: /etc/app
            command: [sh, -c]
            args:
            - >-
              echo "secret=$SECRET mode=$MODE team=$TEAM ns=$NS greeting=$(GREETING) cwd=$(pwd)";
              echo "token=$(cat /var/secret/auth/token) config=$(cat config.yaml)"
            envFrom: [{{configMapRef: {{name: settings}}}}]
            env:
            - {{name: SECRET, valueFrom: {{secretKeyRef: {{name: creds, key: AWS_SECRET_ACCESS_KEY}}}}}}
            - {{name: TEAM, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['team']"}}}}}}
            - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
            - {{name: WHO, value: world}}
            - {{name: GREETING, value: "hello-$(WHO)"}}
            volumeMounts:
            - {{name: secret, mountPath: /var/secret, readOnly: true}}
            - {{name: config, mountPath: /etc/app}}
        """)
    eventually(lambda: phase(stack, namespace, "reader") == "Succeeded", timeout=30,
               what="the pod to succeed")
    assert stack.kubectl("logs", "reader", "-n", namespace).stdout.splitlines() == [
        f"secret=s3cr3t mode=fast team=ml ns={namespace} greeting=hello-world cwd=/etc/app",
        "token=t0k config=epochs: 3",
    ]


def test_a_missing_secret_holds_the_container_until_it_exists(stack: StackHandle,
                                                              namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: waiting}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            command: [sh, -c, 'echo "key=$KEY"']
            env:
            - {{name: KEY, valueFrom: {{secretKeyRef: {{name: later, key: value}}}}}}
        """)

    def waiting_reason() -> str | None:
        statuses = pod(stack, namespace, "waiting").get("status", {}).get("containerStatuses")
        return (statuses or [{}])[0].get("state", {}).get("waiting", {}).get("reason")

    eventually(lambda: waiting_reason() == "CreateContainerConfigError", timeout=30,
               what="the container to wait for its Secret")
    stack.kubectl("create", "secret", "generic", "later", "-n", namespace,
                  "--from-literal=value=arrived")
    eventually(lambda: phase(stack, namespace, "waiting") == "Succeeded", timeout=30,
               what="the pod to run once the Secret exists")
    assert stack.kubectl("logs", "waiting", "-n", namespace).stdout.strip() == "key=arrived"


def test_a_pod_reaches_the_api_server_with_its_service_account_token(
        stack: StackHandle, namespace: str) -> None:
    stack.kubectl("create", "role", "lister", "--verb=list", "--resource=pods", "-n", namespace)
    stack.kubectl("create", "rolebinding", "lister", "--role=lister",
                  f"--serviceaccount={namespace}:default", "-n", namespace)
    code = textwrap.dedent("""
        from kubernetes import client, config
        config.load_incluster_config()
        pods = client.CoreV1Api().list_namespaced_pod(open(
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace").read())
        print(sorted(p.metadata.name for p in pods.items))
        """)
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: in-cluster}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            command: [python, -c, {json.dumps(code)}]
        """)
    eventually(lambda: phase(stack, namespace, "in-cluster") in ("Succeeded", "Failed"),
               timeout=60, what="the pod to finish")
    logs = stack.kubectl("logs", "in-cluster", "-n", namespace).stdout
    assert phase(stack, namespace, "in-cluster") == "Succeeded", logs
    assert logs.strip() == "['in-cluster']"


def test_deletion_sends_sigterm_and_waits_for_the_container(stack: StackHandle, namespace: str,
                                                            tmp_path: Path) -> None:
    marker_dir = tmp_path / "marker"
    marker_dir.mkdir()
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: graceful}}
        spec:
          terminationGracePeriodSeconds: 60
          securityContext: {{runAsUser: 0}}  # the marker directory is root's (pytest's tmp_path)
          volumes: [{{name: out, hostPath: {{path: {marker_dir}}}}}]
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            volumeMounts: [{{name: out, mountPath: /out}}]
            command: [sh, -c, 'trap "echo TERM > /out/signal; exit 0" TERM; touch /out/ready; sleep 600 & wait']
        """)
    # Running means the process started; its trap exists once it says so (as with a kubelet).
    eventually(lambda: (marker_dir / "ready").exists(), timeout=30,
               what="the container to install its SIGTERM handler")
    started = time.monotonic()
    stack.kubectl("delete", "pod", "graceful", "-n", namespace, "--wait=true", timeout=90)
    # Well inside the 60 s grace period: the container got SIGTERM and exited on it.
    assert time.monotonic() - started < 30
    assert (marker_dir / "signal").read_text().strip() == "TERM"


def test_a_container_over_its_memory_limit_is_oom_killed(stack: StackHandle,
                                                        namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: hungry}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            command: [python, -c, 'blocks = [b"x" * (16 << 20) for _ in range(64)]']  # pages touched
            resources: {{limits: {{memory: 128Mi}}}}
        """)
    eventually(lambda: phase(stack, namespace, "hungry") == "Failed", timeout=60,
               what="the pod to fail")
    terminated = pod(stack, namespace, "hungry")["status"]["containerStatuses"][0]["state"][
        "terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137
