"""What the node agent does for a Pod, checked through the API as a user would see it."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.support.testing import StackHandle, eventually


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


def test_an_unsupported_pod_is_refused_with_an_event_not_run(stack: StackHandle,
                                                             namespace: str) -> None:
    apply(stack, namespace, """
        apiVersion: v1
        kind: Pod
        metadata: {name: probed}
        spec:
          containers:
          - name: main
            image: unused
            command: [sleep, "600"]
            readinessProbe: {exec: {command: ["true"]}}
        """)
    eventually(lambda: phase(stack, namespace, "probed") == "Failed", timeout=30,
               what="the pod to be refused")
    status = pod(stack, namespace, "probed")["status"]
    assert status["reason"] == "UnsupportedPodFeature"
    assert "readinessProbe" in status["message"]
    refused = [e for e in events(stack, namespace, "probed")
               if e["reason"] == "UnsupportedPodFeature"]
    assert refused and refused[0]["type"] == "Warning"
    assert not any(e["reason"] == "Started" for e in events(stack, namespace, "probed"))


def test_env_and_volumes_come_from_secrets_config_maps_and_the_downward_api(
        stack: StackHandle, namespace: str) -> None:
    stack.kubectl("create", "secret", "generic", "creds", "-n", namespace,
                  "--from-literal=AWS_SECRET_ACCESS_KEY=s3cr3t", "--from-literal=token=t0k")
    stack.kubectl("create", "configmap", "settings", "-n", namespace,
                  "--from-literal=MODE=fast", "--from-literal=config.yaml=epochs: 3")
    apply(stack, namespace, """
        apiVersion: v1
        kind: Pod
        metadata: {name: reader, labels: {team: ml}}
        spec:
          restartPolicy: Never
          volumes:
          - {name: secret, secret: {secretName: creds, items: [{key: token, path: auth/token}]}}
          - {name: config, configMap: {name: settings}}
          containers:
          - name: main
            image: unused
            workingDir: /etc/app
            command: [sh, -c]
            args:
            - >-
              echo "secret=$SECRET mode=$MODE team=$TEAM ns=$NS greeting=$(GREETING) cwd=$(pwd)";
              echo "token=$(cat /var/secret/auth/token) config=$(cat config.yaml)"
            envFrom: [{configMapRef: {name: settings}}]
            env:
            - {name: SECRET, valueFrom: {secretKeyRef: {name: creds, key: AWS_SECRET_ACCESS_KEY}}}
            - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.labels['team']"}}}
            - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: WHO, value: world}
            - {name: GREETING, value: "hello-$(WHO)"}
            volumeMounts:
            - {name: secret, mountPath: /var/secret, readOnly: true}
            - {name: config, mountPath: /etc/app}
        """)
    eventually(lambda: phase(stack, namespace, "reader") == "Succeeded", timeout=30,
               what="the pod to succeed")
    assert stack.kubectl("logs", "reader", "-n", namespace).stdout.splitlines() == [
        f"secret=s3cr3t mode=fast team=ml ns={namespace} greeting=hello-world cwd=/etc/app",
        "token=t0k config=epochs: 3",
    ]


def test_a_missing_secret_holds_the_container_until_it_exists(stack: StackHandle,
                                                              namespace: str) -> None:
    apply(stack, namespace, """
        apiVersion: v1
        kind: Pod
        metadata: {name: waiting}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: unused
            command: [sh, -c, 'echo "key=$KEY"']
            env:
            - {name: KEY, valueFrom: {secretKeyRef: {name: later, key: value}}}
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
            image: unused
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
          volumes: [{{name: out, hostPath: {{path: {marker_dir}}}}}]
          containers:
          - name: main
            image: unused
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
    apply(stack, namespace, """
        apiVersion: v1
        kind: Pod
        metadata: {name: hungry}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: unused
            command: [python, -c, 'blocks = [bytearray(16 * 2**20) for _ in range(64)]']
            resources: {limits: {memory: 128Mi}}
        """)
    eventually(lambda: phase(stack, namespace, "hungry") == "Failed", timeout=60,
               what="the pod to fail")
    terminated = pod(stack, namespace, "hungry")["status"]["containerStatuses"][0]["state"][
        "terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137


def test_each_pod_has_its_own_tmp_pid_namespace_and_hostname(stack: StackHandle,
                                                             namespace: str) -> None:
    # `$$$$` is the shell's `$$` after Kubernetes' own `$$` escaping.
    script = ('echo "$(hostname) $$$$ $(ls /tmp | wc -l)"; echo secret > /tmp/mine; '
              'ps -e -o pid= | wc -l')
    for name in ("first", "second"):
        apply(stack, namespace, f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: {name}}}
            spec:
              restartPolicy: Never
              containers:
              - name: main
                image: unused
                command: [sh, -c, {json.dumps(script)}]
            """)
    for name in ("first", "second"):
        eventually(lambda name=name: phase(stack, namespace, name) == "Succeeded", timeout=30,
                   what=f"pod {name} to succeed")
        hostname, shell_pid, tmp_entries, processes = stack.kubectl(
            "logs", name, "-n", namespace).stdout.split()
        assert hostname == name
        assert shell_pid == "2"  # PID 1 is the pod's init; the command is its only child
        assert int(processes) <= 4  # init, sh, ps (and wc): nothing from the host
        assert tmp_entries == str(_entries_under_tmp_kept_visible(stack))
    assert not Path("/tmp/mine").exists()


def _entries_under_tmp_kept_visible(stack: StackHandle) -> int:
    """/tmp in a pod is empty but for the clone and the stack when they live under /tmp."""
    keep = {Path(p).relative_to("/tmp").parts[0] for p in (str(stack.dir), sys.prefix)
            if p.startswith("/tmp/")}
    repo = Path(__file__).resolve().parents[3]
    if str(repo).startswith("/tmp/"):
        keep.add(repo.relative_to("/tmp").parts[0])
    return len(keep)


def test_a_volume_over_tmp_still_shows_the_project_and_its_virtualenv(
        stack: StackHandle, namespace: str) -> None:
    """Worker pods mount an emptyDir on /tmp; the project must stay importable even when the
    clone itself lives under /tmp (as CI's does)."""
    apply(stack, namespace, """
        apiVersion: v1
        kind: Pod
        metadata: {name: covered}
        spec:
          restartPolicy: Never
          volumes: [{name: tmp, emptyDir: {}}]
          containers:
          - name: main
            image: unused
            volumeMounts: [{name: tmp, mountPath: /tmp}]
            command: [python, -c, 'import tailor_devstack, tailor_contract; open("/tmp/x", "w"); print("ok")']
        """)
    eventually(lambda: phase(stack, namespace, "covered") in ("Succeeded", "Failed"),
               timeout=30, what="the pod to finish")
    logs = stack.kubectl("logs", "covered", "-n", namespace).stdout
    assert phase(stack, namespace, "covered") == "Succeeded", logs
    assert logs.strip() == "ok"
