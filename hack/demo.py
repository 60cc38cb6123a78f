"""`make demo`: what the local stack can show today.

Two workers of an Indexed Job behind a headless Service find each other by DNS name (as
torchrun workers rendezvous with worker 0), exchange their ranks over TCP and agree on the
sum, the shape of an all-reduce. The full story (train, promote, drift, retrain) replaces this
once the operator and the DriftMonitor land.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from tailor_localstack.testing import acquire_stack, eventually

NAMESPACE = "tailor-demo"
WORKER = textwrap.dedent("""
    import os, socket, time
    rank, world = int(os.environ["JOB_COMPLETION_INDEX"]), 2
    master = f"allreduce-0.workers.{os.environ['NS']}.svc.cluster.local"
    if rank == 0:
        server = socket.create_server(("0.0.0.0", 29500))
        total = rank
        for _ in range(world - 1):
            conn, _ = server.accept()
            total += int(conn.recv(16))
            peers = conn
        peers.sendall(str(total).encode())
    else:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection((master, 29500), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.sendall(str(rank).encode())
        total = int(conn.recv(16))
    print(f"rank {rank}/{world} on {socket.gethostname()}: sum of ranks = {total}")
    """)


def main() -> int:
    print("== Tailor demo: the local stack ==")
    stack, _ = acquire_stack()
    kubectl = stack.kubectl
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=120)
    kubectl("create", "namespace", NAMESPACE)
    eventually(lambda: kubectl("get", "sa", "default", "-n", NAMESPACE,
                               check=False).returncode == 0, timeout=30,
               what="the namespace's default ServiceAccount")
    manifest = {
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "workers"},
             "spec": {"clusterIP": "None", "selector": {"app": "allreduce"}}},
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "allreduce"},
             "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed",
                      "template": {"metadata": {"labels": {"app": "allreduce"}}, "spec": {
                          "subdomain": "workers", "restartPolicy": "Never",
                          "containers": [{"name": "worker", "image": "unused",
                                          "command": ["python", "-c", WORKER],
                                          "env": [{"name": "NS", "value": NAMESPACE}]}]}}}},
        ]}
    print(f"-> applying a headless Service and a 2-worker Indexed Job in {NAMESPACE}")
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifest))
    started = time.monotonic()
    last = ""
    while True:
        pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        line = ", ".join(f"{p['metadata']['name']}: {p['status'].get('phase')} "
                         f"{p['status'].get('podIP', '')}" for p in pods)
        if line != last:
            print(f"   {time.monotonic() - started:5.1f}s  {line}")
            last = line
        job = json.loads(kubectl("get", "job", "allreduce", "-n", NAMESPACE, "-o",
                                 "json").stdout)
        done = {c["type"] for c in job.get("status", {}).get("conditions", [])
                if c["status"] == "True"}
        if done & {"Complete", "Failed"}:
            break
        if time.monotonic() - started > 120:
            print("the job did not finish in 2 minutes", file=sys.stderr)
            return 1
        time.sleep(0.5)  # a progress display: refresh twice a second
    for pod in sorted(p["metadata"]["name"] for p in pods):
        print("   " + kubectl("logs", pod, "-n", NAMESPACE).stdout.strip())
    state = stack.state
    print(f"\nJob {'completed' if 'Complete' in done else 'FAILED'}. The stack stays up "
          f"(`make down` stops it); `source {stack.dir / 'env'}` to use kubectl.")
    print(f"   MinIO      {stack.env['MINIO_CONSOLE_URL']}  (user {state.s3_access_key}; "
          f"password in .tailor/env)")
    print(f"   MLflow     {state.mlflow_uri}")
    print(f"   Prometheus {state.prometheus_url}")
    return 0 if "Complete" in done else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
