"""The operator bench's ceiling: the fastest plain client we could write for the same children.

Run as its own process by `bench/operator_scale.py` (as the operator is), it creates the
headless Service and worker Job of `--jobs` jobs (bodies built by the operator's own builders,
for the same spec) with nothing in the way:
- bodies go out as raw JSON (`json.dumps`), answers are not decoded beyond the status code;
- one pooled HTTPS connection per in-flight request, opened before the burst starts;
- a job's Service and Job are created at the same time (as the controller does), and
  `--concurrency` jobs are in flight at once.
`--client threads` is urllib3's connection pool driven by threads (the operator's own layout:
a pool of handler threads, a second pool for the Services); `--client asyncio` is aiohttp on
one event loop (Kopf's own HTTP stack) with a semaphore of `--concurrency` jobs.
`--objects trainingjobs` creates the TrainingJobs instead: the bench applies Tailor's burst
with this same client.

Prints one JSON line: when each job's creates started (time.monotonic, which on Linux is the
same clock in every process), the process's CPU seconds (utime + stime from /proc) over the
burst, its requests, errors and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import ssl
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client, config
from tailor.builders.trainingjob import JobRef, build_service, build_worker_job
from tailor.settings import DEFAULT_TRAINER_IMAGE
from tailor_contract.trainingjob import TrainingJobSpec

SPEC: dict[str, Any] = {
    "task": "custom", "workers": 1, "procsPerWorker": 1,
    "command": ["python", "-c", "print('never runs')"],
    "scheduling": {"nodeSelector": {"tailor.dev/bench": "no-such-node"}},
}
PATHS = {"Service": "/api/v1/namespaces/{ns}/services",
         "Job": "/apis/batch/v1/namespaces/{ns}/jobs"}


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process, from /proc (fields 14 and 15 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int | str = "self") -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def children(spec: TrainingJobSpec, namespace: str, name: str) -> list[tuple[str, bytes]]:
    """The Service and Job the operator would create for TrainingJob `name`, as JSON bytes.
    No owner reference: there is no TrainingJob, and the garbage collector would delete
    children whose owner does not exist."""
    ref = JobRef(name, namespace, str(uuid.uuid4()))
    service = build_service(ref)
    job = build_worker_job(spec, SPEC, ref, image=DEFAULT_TRAINER_IMAGE, attempt=0,
                           deadline_seconds=None)
    out = []
    for obj in (service, job):
        obj["metadata"].pop("ownerReferences")
        out.append((PATHS[obj["kind"]].format(ns=namespace), json.dumps(obj).encode()))
    return out


def trainingjob(namespace: str, name: str) -> list[tuple[str, bytes]]:
    """The TrainingJob itself: the bench applies Tailor's burst with this same client, so
    that both sides' requests leave at the same rate."""
    body = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": SPEC}
    path = f"/apis/tailor.dev/v1alpha1/namespaces/{namespace}/trainingjobs"
    return [(path, json.dumps(body).encode())]


Bodies = Callable[[str, str], list[tuple[str, bytes]]]


def load_configuration(kubeconfig: str) -> client.Configuration:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig,  # type: ignore[no-untyped-call]
                            client_configuration=configuration)
    return configuration


def headers(configuration: client.Configuration) -> dict[str, str]:
    out = {"Content-Type": "application/json", "Accept": "application/json"}
    token = configuration.api_key.get("authorization")
    if token:
        out["Authorization"] = token
    return out


class Result:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.requests = 0
        self.errors: list[str] = []
        self.cpu_start = 0.0

    def check(self, status: int, path: str, text: Callable[[], str]) -> None:
        self.requests += 1
        if status != 201:
            self.errors.append(f"{status} {path}: {text()[:200]}")


def run_threads(configuration: client.Configuration, make: Bodies, namespace: str,
                count: int, concurrency: int, result: Result) -> None:
    """urllib3 pool, `concurrency` job threads, as many Service threads (the operator's layout)."""
    url = urlsplit(configuration.host)
    pool = urllib3.HTTPSConnectionPool(
        str(url.hostname), url.port or 443, maxsize=2 * concurrency, block=True, retries=False,
        ca_certs=configuration.ssl_ca_cert, cert_file=configuration.cert_file,
        key_file=configuration.key_file, cert_reqs="CERT_REQUIRED")
    head = headers(configuration)

    def post(path: str, body: bytes) -> None:
        response = pool.urlopen("POST", path, body=body, headers=head, preload_content=True)
        result.check(response.status, path, lambda: response.data.decode(errors="replace"))

    with ThreadPoolExecutor(concurrency) as jobs, ThreadPoolExecutor(concurrency) as services:
        # Open every connection before the burst: a warm pool, as the operator's is.
        warm = [jobs.submit(pool.urlopen, "GET", "/version", headers=head)
                for _ in range(concurrency)]
        warm += [services.submit(pool.urlopen, "GET", "/version", headers=head)
                 for _ in range(concurrency)]
        for future in warm:
            future.result()

        def one(i: int) -> None:
            name = f"bench-{i:04d}"
            result.started[name] = time.monotonic()
            *first, (path, body) = make(namespace, name)
            aside = [services.submit(post, *request) for request in first]  # the Service
            post(path, body)
            for future in aside:
                future.result()

        result.cpu_start = cpu_seconds()
        list(jobs.map(one, range(count)))


async def run_asyncio(configuration: client.Configuration, make: Bodies, namespace: str,
                      count: int, concurrency: int, result: Result) -> None:
    """aiohttp on one event loop: `concurrency` jobs at once, each job's two creates gathered."""
    import aiohttp  # Kopf's HTTP client; imported here so the threads mode does not load it

    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    context.load_cert_chain(str(configuration.cert_file), str(configuration.key_file))
    connector = aiohttp.TCPConnector(limit=2 * concurrency, ssl=context)
    head = headers(configuration)
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(base_url=configuration.host, connector=connector,
                                     headers=head) as session:
        async def get_version() -> None:
            async with session.get("/version") as response:
                await response.read()

        await asyncio.gather(*(get_version() for _ in range(2 * concurrency)))

        async def post(path: str, body: bytes) -> None:
            async with session.post(path, data=body) as response:
                text = await response.read()
                result.check(response.status, path, lambda: text.decode(errors="replace"))

        async def one(i: int) -> None:
            async with gate:
                name = f"bench-{i:04d}"
                result.started[name] = time.monotonic()
                await asyncio.gather(*(post(path, body)
                                       for path, body in make(namespace, name)))

        result.cpu_start = cpu_seconds()
        await asyncio.gather(*(one(i) for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--client", choices=("threads", "asyncio"), default="threads")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--objects", choices=("children", "trainingjobs"), default="children")
    args = parser.parse_args()
    configuration = load_configuration(args.kubeconfig)
    result = Result()
    make: Bodies = trainingjob
    if args.objects == "children":
        make = functools.partial(children, TrainingJobSpec.model_validate(SPEC))
    if args.client == "threads":
        run_threads(configuration, make, args.namespace, args.jobs, args.concurrency, result)
    else:
        asyncio.run(run_asyncio(configuration, make, args.namespace, args.jobs,
                                args.concurrency, result))
    done = time.monotonic()
    print(json.dumps({"client": args.client, "concurrency": args.concurrency,
                      "started": result.started, "done": done,
                      "cpu_s": cpu_seconds() - result.cpu_start,
                      "requests": result.requests, "errors": result.errors[:5],
                      "error_count": len(result.errors), "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
