"""The control plane is real: API machinery, RBAC, the Job and garbage-collection controllers,
the scheduler, and pods run by the node."""

from __future__ import annotations

import json
import textwrap
import threading
from typing import Any

import requests
from kubernetes import client, config, watch

from tests.support.testing import PAUSE_IMAGE, TOOLS_IMAGE, StackHandle, eventually


def apply(stack: StackHandle, namespace: str, manifest: str) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent(manifest))


def get(stack: StackHandle, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = stack.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def api(stack: StackHandle) -> client.ApiClient:
    return config.new_client_from_config(str(stack.kubeconfig))


def test_objects_are_created_read_listed_and_watched(stack: StackHandle, namespace: str) -> None:
    core = client.CoreV1Api(api(stack))
    seen: list[tuple[str, str]] = []
    started = threading.Event()

    def watch_config_maps() -> None:
        stream = watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                      timeout_seconds=20)
        started.set()
        for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
            if ("DELETED", "settings") in seen:
                return

    watcher = threading.Thread(target=watch_config_maps)
    watcher.start()
    started.wait(10)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"})
    core.create_namespaced_config_map(namespace, body)
    assert core.read_namespaced_config_map("settings", namespace).data == {"a": "1"}
    core.patch_namespaced_config_map("settings", namespace, {"data": {"a": "2"}})
    names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
    assert "settings" in names
    core.delete_namespaced_config_map("settings", namespace)
    watcher.join(30)
    assert [e for e in seen if e[1] == "settings"] == [
        ("ADDED", "settings"), ("MODIFIED", "settings"), ("DELETED", "settings")]


def test_rbac_denies_a_service_account_until_a_role_binding_allows_it(
        stack: StackHandle, namespace: str) -> None:
    stack.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = stack.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    url = f"{stack.state.api_server}/api/v1/namespaces/{namespace}/pods"

    def status() -> int:
        return requests.get(url, headers={"Authorization": f"Bearer {token}"},
                            verify=str(stack.stack.pki.ca_cert), timeout=10).status_code

    assert status() == 403
    stack.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods",
                  "-n", namespace)
    stack.kubectl("create", "rolebinding", "reader", "--role=pod-reader",
                  f"--serviceaccount={namespace}:reader", "-n", namespace)
    eventually(lambda: status() == 200, timeout=10, what="the RoleBinding to take effect")
    secrets_url = f"{stack.state.api_server}/api/v1/namespaces/{namespace}/secrets"
    assert requests.get(secrets_url, headers={"Authorization": f"Bearer {token}"},
                        verify=str(stack.stack.pki.ca_cert), timeout=10).status_code == 403


def test_indexed_job_runs_one_pod_per_index_and_completes(stack: StackHandle,
                                                          namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: indexed}}
        spec:
          completions: 2
          parallelism: 2
          completionMode: Indexed
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: work
                image: {TOOLS_IMAGE}
                command: [sh, -c, 'echo "index=$JOB_COMPLETION_INDEX host=$(hostname)"']
        """)
    eventually(lambda: any(c["type"] == "Complete" and c["status"] == "True" for c in
                           get(stack, namespace, "job", "indexed").get("status", {})
                           .get("conditions", [])), timeout=60, what="the Job to complete")
    pods = json.loads(stack.kubectl("get", "pods", "-n", namespace, "-l",
                                    "job-name=indexed", "-o", "json").stdout)["items"]
    assert sorted(p["status"]["phase"] for p in pods) == ["Succeeded", "Succeeded"]
    logs = sorted(stack.kubectl("logs", p["metadata"]["name"], "-n", namespace).stdout.strip()
                  for p in pods)
    assert logs == ["index=0 host=indexed-0", "index=1 host=indexed-1"]


def test_pods_behind_a_headless_service_reach_each_other_by_dns_name(
        stack: StackHandle, namespace: str) -> None:
    server = """
import socket
s = socket.create_server(("0.0.0.0", 7000))
conn, _ = s.accept()
conn.sendall(b"pong from " + socket.gethostname().encode() + b" to " + conn.recv(64))
conn.close()
"""
    fqdn = f"server.peers.{namespace}.svc.cluster.local"
    client_code = f"""
import socket, time
deadline = time.monotonic() + 30
while True:
    try:
        conn = socket.create_connection(("{fqdn}", 7000), timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
conn.sendall(socket.gethostname().encode())
print(conn.recv(128).decode())
"""
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: peers}}
        spec:
          clusterIP: None
          selector: {{app: peers}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: server, labels: {{app: peers}}}}
        spec:
          hostname: server
          subdomain: peers
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            command: [python, -c, {json.dumps(server)}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: client, labels: {{app: peers}}}}
        spec:
          hostname: client
          subdomain: peers
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            command: [python, -c, {json.dumps(client_code)}]
        """)
    for pod in ("server", "client"):
        eventually(lambda pod=pod: get(stack, namespace, "pod", pod).get("status", {})
                   .get("phase") == "Succeeded", timeout=60, what=f"pod {pod} to succeed")
    assert stack.kubectl("logs", "client", "-n", namespace).stdout.strip() == \
        "pong from server to client"
    server_ip = get(stack, namespace, "pod", "server")["status"]["podIP"]
    client_ip = get(stack, namespace, "pod", "client")["status"]["podIP"]
    assert server_ip != client_ip


def test_deleting_a_job_garbage_collects_its_pods(stack: StackHandle, namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: sleeper}}
        spec:
          parallelism: 2
          completions: 2
          template:
            spec:
              restartPolicy: Never
              terminationGracePeriodSeconds: 5
              containers:
              - name: sleep
                image: {PAUSE_IMAGE}
        """)

    def pods() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(stack.kubectl(
            "get", "pods", "-n", namespace, "-l", "job-name=sleeper", "-o", "json").stdout
        )["items"]
        return items

    eventually(lambda: len([p for p in pods() if p["status"].get("phase") == "Running"]) == 2,
               timeout=60, what="both pods to run")
    owners = {p["metadata"]["ownerReferences"][0]["kind"] for p in pods()}
    assert owners == {"Job"}
    stack.kubectl("delete", "job", "sleeper", "-n", namespace, "--cascade=background")
    eventually(lambda: pods() == [], timeout=60, what="the Job's pods to be deleted")


def test_failing_container_reports_exit_code_and_termination_message(
        stack: StackHandle, namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: fails}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            command: [sh, -c, 'echo "bad input: column label missing" > /dev/termination-log; exit 3']
        """)
    state = eventually(lambda: get(stack, namespace, "pod", "fails").get("status", {})
                       .get("containerStatuses", [{}])[0].get("state", {}).get("terminated"),
                       timeout=60, what="the container to terminate")
    assert state["exitCode"] == 3
    assert state["reason"] == "Error"
    assert state["message"] == "bad input: column label missing\n"  # as written, verbatim
    eventually(lambda: get(stack, namespace, "pod", "fails")["status"]["phase"] == "Failed",
               timeout=30, what="the pod to fail")


def test_fallback_to_logs_on_error_uses_the_log_tail(stack: StackHandle, namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: fails}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            terminationMessagePolicy: FallbackToLogsOnError
            command: [sh, -c, 'echo first >&2; echo "Traceback: boom" >&2; exit 1']  # one stream: ordered
        """)
    state = eventually(lambda: get(stack, namespace, "pod", "fails").get("status", {})
                       .get("containerStatuses", [{}])[0].get("state", {}).get("terminated"),
                       timeout=60, what="the container to terminate")
    assert state["exitCode"] == 1
    assert state["message"].splitlines() == ["first", "Traceback: boom"]  # the log's tail


def test_restart_policy_on_failure_restarts_and_counts(stack: StackHandle,
                                                       namespace: str) -> None:
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: flaky}}
        spec:
          restartPolicy: OnFailure
          volumes: [{{name: state, emptyDir: {{}}}}]
          containers:
          - name: main
            image: {TOOLS_IMAGE}
            volumeMounts: [{{name: state, mountPath: /state}}]
            command: [sh, -c, 'if [ -e /state/ran ]; then echo second; exec sleep 600; fi; touch /state/ran; echo first; exit 7']
        """)

    def restarted() -> dict[str, Any] | None:
        statuses = get(stack, namespace, "pod", "flaky").get("status", {}).get(
            "containerStatuses", [{}])
        running = statuses[0].get("restartCount") == 1 and "running" in statuses[0]["state"]
        return statuses[0] if running else None

    # The kubelet's first back-off is 10 s.
    status = eventually(restarted, timeout=60, what="the container to run again after exit 7")
    assert status["lastState"]["terminated"]["exitCode"] == 7
    assert stack.kubectl("logs", "flaky", "-n", namespace).stdout.strip() == "second"
    assert stack.kubectl("logs", "flaky", "-n", namespace, "--previous").stdout.strip() == "first"


def test_a_pod_asking_for_more_gpus_than_the_node_has_stays_pending(
        stack: StackHandle, namespace: str) -> None:
    too_many = stack.state.gpus + 1
    apply(stack, namespace, f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: greedy}}
        spec:
          containers:
          - name: main
            image: {PAUSE_IMAGE}
            resources: {{limits: {{nvidia.com/gpu: {too_many}}}}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: modest}}
        spec:
          containers:
          - name: main
            image: {PAUSE_IMAGE}
            resources: {{limits: {{nvidia.com/gpu: 1}}}}
        """)

    def unschedulable() -> dict[str, Any] | None:
        for c in get(stack, namespace, "pod", "greedy").get("status", {}).get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return c
        return None

    condition = eventually(unschedulable, timeout=30, what="the scheduler to refuse the pod")
    assert condition["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in condition["message"]
    eventually(lambda: get(stack, namespace, "pod", "modest").get("status", {}).get("phase")
               == "Running", timeout=30, what="the pod asking for one GPU to run")
    assert get(stack, namespace, "pod", "greedy")["status"]["phase"] == "Pending"
    assert "nodeName" not in get(stack, namespace, "pod", "greedy")["spec"]
