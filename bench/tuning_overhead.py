"""Orchestration overhead of spec.tuning: a search on the stack against Optuna in one process.

Stack side: a private operator serves a fresh namespace; one TrainingJob (BBC News, MiniLM,
tiny data, one worker) searches 12 trials, 3 at a time, without pruning, so every trial runs
whole. Watches on the trial Jobs and pods record when each pod is seen, Running and Succeeded
and when each Job is seen and Complete (local monotonic clock). The i-th trial to end frees the
slot the (3+i)-th trial fills: gap_i = Running of the (3+i)-th trial to start minus the i-th
end. The search's wall time runs from the apply to status.tuning.state Completed. Pod start
cost per trial: pod seen -> Running (the node agent), and Running -> Succeeded minus the
trainer's own "finished in" (its log): imports, the launcher and teardown.

Peer: after the operator stopped and the job is gone, the same 12 parameter sets (read from
status.tuning.trials) run one after another in this process: an Optuna study, `enqueue_trial`
plus ask/tell, each trial the trainer's own `Run` in trial mode with the environment of that
trial's Job (its run id and artifact prefix renamed, so it does not resume the pod's run).

    ~/.cache/tailor/venv/bin/python -m bench.tuning_overhead   # from the repository root
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from tests.support.story import Size, Story
from tests.support.testing import OperatorProcess, StackHandle, acquire_stack, eventually

JOB = "tuned"
SIZE = Size(per_class=20, epochs=1, steps=None, max_length=32, test=0.25, validation=0.25,
            timeout=900)
SEARCH_SPACE = {"learningRate": {"min": 1e-5, "max": 3e-3, "scale": "log"},
                "batchSize": {"values": [4, 8]}}
TRIAL_LABEL = "tailor.dev/trial"
SELECTOR = f"tailor.dev/trainingjob={JOB},tailor.dev/component=trial"
FINISHED = re.compile(r"finished in ([0-9.]+)s")


@dataclass
class Times:
    """Local monotonic times of one trial's Job and pod (first attempt's start, last end)."""

    job_seen: float | None = None
    job_complete: float | None = None
    pod_seen: float | None = None
    running: float | None = None
    succeeded: float | None = None
    pod: str = ""


@dataclass
class Watcher:
    """Watches the trial Jobs and pods of one namespace from two threads."""

    api: client.ApiClient
    namespace: str
    trials: dict[int, Times] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        core, batch = client.CoreV1Api(self.api), client.BatchV1Api(self.api)
        for lister, record in ((core.list_namespaced_pod, self._pod),
                               (batch.list_namespaced_job, self._job)):
            threading.Thread(target=self._loop, args=(lister, record), daemon=True).start()

    def _loop(self, lister: Any, record: Any) -> None:
        while not self.stopped.is_set():
            stream = watch.Watch()
            for event in stream.stream(lister, self.namespace, label_selector=SELECTOR,
                                       timeout_seconds=20):
                record(event["object"], time.monotonic())
                if self.stopped.is_set():
                    stream.stop()

    def _times(self, obj: Any) -> Times:
        number = int(obj.metadata.labels[TRIAL_LABEL])
        return self.trials.setdefault(number, Times())

    def _pod(self, pod: Any, now: float) -> None:
        times = self._times(pod)
        times.pod_seen = times.pod_seen or now
        if pod.status.phase == "Running" and times.running is None:
            times.running, times.pod = now, pod.metadata.name
        if pod.status.phase == "Succeeded":
            times.succeeded = times.succeeded or now
            times.pod = pod.metadata.name

    def _job(self, job: Any, now: float) -> None:
        times = self._times(job)
        times.job_seen = times.job_seen or now
        if any(c.type == "Complete" and c.status == "True"
               for c in (job.status.conditions or [])):
            times.job_complete = times.job_complete or now


def manifest(story: Story, seed: int) -> dict[str, Any]:
    tj = story.trainingjob()
    tj["metadata"]["name"] = JOB
    spec = tj["spec"]
    spec["workers"] = 1
    spec["model"]["baseline"] = {"generic": False}
    spec["tuning"] = {"objective": {"metric": "accuracy"}, "algorithm": "tpe", "seed": seed,
                      "maxTrials": 12, "parallelTrials": 3, "searchSpace": SEARCH_SPACE}
    return tj


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": float("nan"), "p90": float("nan"), "max": float("nan")}
    return {"p50": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max": ordered[-1]}


def gaps(trials: dict[int, Times], parallel: int, end: str) -> list[float]:
    """gap_i = the (parallel+i)-th start (Running) minus the i-th end (`end` attribute)."""
    starts = sorted(t.running for t in trials.values() if t.running is not None)
    ends = sorted(getattr(t, end) for t in trials.values() if getattr(t, end) is not None)
    return [starts[parallel + i] - ends[i] for i in range(len(starts) - parallel)]


def run_search(stack: StackHandle, api: client.ApiClient, story: Story, seed: int,
               log_path: Path) -> dict[str, Any]:
    """The search on the stack; its times, status.tuning, the trial Jobs' env and logs."""
    watcher = Watcher(api, story.ns)
    watcher.start()
    operator = OperatorProcess(stack, log_path, "--namespace", story.ns)
    try:
        started = time.monotonic()
        stack.kubectl("apply", "-n", story.ns, "-f", "-", input=json.dumps(manifest(story, seed)))

        def done() -> dict[str, Any] | None:
            search: dict[str, Any] = story.status("tj", JOB).get("tuning") or {}
            return search if search.get("state") in ("Completed", "Failed") else None

        search = eventually(done, timeout=SIZE.timeout, what="the search to end", interval=0.25)
        wall = time.monotonic() - started
        envs = {int(j.metadata.labels[TRIAL_LABEL]): j.spec.template.spec.containers[0].env
                for j in client.BatchV1Api(api).list_namespaced_job(
                    story.ns, label_selector=SELECTOR).items}
        core = client.CoreV1Api(api)
        finished = {}
        for number, times in watcher.trials.items():
            text = core.read_namespaced_pod_log(times.pod, story.ns, container="trainer")
            match = FINISHED.search(text)
            finished[number] = float(match.group(1)) if match else float("nan")
    finally:
        watcher.stopped.set()
        operator.stop()
    # Nothing of the stack side may overlap the peer: the final run's pods go with the job.
    stack.kubectl("delete", "tj", JOB, "-n", story.ns, "--wait=false")
    eventually(lambda: not client.CoreV1Api(api).list_namespaced_pod(story.ns).items,
               timeout=180, what="the job's pods to be gone", interval=1)
    return {"wall": wall, "search": search, "times": watcher.trials, "envs": envs,
            "finished": finished, "started": started}


def trial_env(env: list[Any], stack: StackHandle, work: Path) -> dict[str, str]:
    """A trial Job's trainer env for this process: secrets resolved, the run renamed, PET_*
    (torchrun's) left out, a free metrics port and local paths."""
    secrets_ = {"AWS_ACCESS_KEY_ID": stack.state.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": stack.state.s3_secret_key}
    out: dict[str, str] = {}
    for var in env:
        if var.name.startswith("PET_") or var.name == "HOME":
            continue
        out[var.name] = var.value if var.value_from is None else secrets_[var.name]
    run_id = out["TAILOR_RUN_ID"]
    out["TAILOR_RUN_ID"] = run_id.replace("-trial-", "-inproc-trial-")
    out["TAILOR_ARTIFACT_URI"] = out["TAILOR_ARTIFACT_URI"].replace("/runs/", "/runs/inproc-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        out["TAILOR_METRICS_PORT"] = str(s.getsockname()[1])
    out["TAILOR_TERMINATION_LOG"] = str(work / "termination-log")
    out["TAILOR_WORK_DIR"] = str(work)
    return out


def with_params(env: dict[str, str], params: dict[str, Any]) -> dict[str, str]:
    obj = json.loads(env["TAILOR_TRAININGJOB"])
    obj["spec"]["hyperparameters"] = {**obj["spec"]["hyperparameters"], **params}
    return {**env, "TAILOR_TRAININGJOB": json.dumps(obj)}


def run_peer(stack: StackHandle, stacked: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same trials one after another in this process, through Optuna's ask/tell."""
    started = time.monotonic()
    os.environ.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    import optuna
    import torch
    from tailor_trainer.config import load_config
    from tailor_trainer.dist import init_world
    from tailor_trainer.run import Run

    torch.set_num_threads(1)  # as in a pod (OMP_NUM_THREADS=1)
    imported = time.monotonic() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    world = init_world()
    trials = sorted(stacked["search"]["trials"], key=lambda t: t["number"])
    values, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="tuning-overhead-") as tmp:
        for recorded in trials:
            number = recorded["number"]
            study.enqueue_trial(recorded["parameters"])
            trial = study.ask()
            params = {"learningRate": trial.suggest_float("learningRate", 1e-5, 3e-3, log=True),
                      "batchSize": trial.suggest_categorical("batchSize", [4, 8])}
            work = Path(tmp) / str(number)
            work.mkdir()
            env = with_params(trial_env(stacked["envs"][number], stack, work), params)
            saved = dict(os.environ)
            os.environ.update(env)
            one = time.monotonic()
            try:
                outcome = Run(load_config(env), world).execute()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            seconds[number] = time.monotonic() - one
            values[number] = (outcome.trial or {}).get("value")
            study.tell(trial, values[number] if values[number] is not None else float("nan"))
            print(f"   in-process trial {number}: {seconds[number]:.1f}s value {values[number]}"
                  f" (stack {recorded.get('value')})", flush=True)
    return {"wall": time.monotonic() - started, "imports": imported, "values": values,
            "seconds": seconds}


def summarise(stacked: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    times: dict[int, Times] = stacked["times"]
    whole = {n: t for n, t in times.items()
             if t.pod_seen is not None and t.running is not None and t.succeeded is not None}
    done = list(whole.values())
    create_running = [t.running - t.pod_seen for t in done]  # type: ignore[operator]
    inside = {n: t.succeeded - t.running for n, t in whole.items()}  # type: ignore[operator]
    process = [inside[n] - stacked["finished"][n] for n in whole]
    steps = {  # where a gap goes: end -> Job Complete -> next Job -> its pod -> Running
        "pod Succeeded -> Job Complete": [t.job_complete - t.succeeded for t in done
                                          if t.job_complete],
        "pod seen -> Running (node agent)": create_running,
        "Job seen -> pod seen (job controller)": [t.pod_seen - t.job_seen for t in done
                                                  if t.job_seen]}
    first_job = min(t.job_seen for t in times.values() if t.job_seen)
    return {
        "trials": len(done), "stack_wall": stacked["wall"], "peer_wall": peer["wall"],
        "peer_imports": peer["imports"], "ratio": stacked["wall"] / peer["wall"],
        "apply_to_first_job": first_job - stacked["started"],
        "gap_pod": quantiles(gaps(times, 3, "succeeded")),
        "gap_job": quantiles(gaps(times, 3, "job_complete")),
        "job_complete_to_next_job": quantiles(next_job_gaps(times)),
        "pod_start_sum": sum(create_running), "pod_start": quantiles(create_running),
        "process_overhead_sum": sum(process), "process_overhead": quantiles(process),
        "trial_process_sum": sum(inside.values()),
        "trainer_finished_sum": sum(stacked["finished"].values()),
        "peer_trial_sum": sum(peer["seconds"].values()),
        "steps": {k: quantiles(v) for k, v in steps.items()},
    }


def next_job_gaps(times: dict[int, Times]) -> list[float]:
    """The operator's part: the i-th Job Complete -> the (3+i)-th trial Job seen."""
    seen = sorted(t.job_seen for t in times.values() if t.job_seen is not None)
    ends = sorted(t.job_complete for t in times.values() if t.job_complete is not None)
    return [seen[3 + i] - ends[i] for i in range(len(seen) - 3)]


def show(result: dict[str, Any]) -> None:
    def q(d: dict[str, float]) -> str:
        return f"p50 {d['p50']:.2f}s / p90 {d['p90']:.2f}s / max {d['max']:.2f}s"

    print(f"\n{result['trials']} trials, 3 at a time, on the stack; the same trials in process")
    print(f"stack search wall (apply -> Completed)     {result['stack_wall']:8.1f}s")
    print(f"in-process sequential wall (imports incl.) {result['peer_wall']:8.1f}s "
          f"(imports {result['peer_imports']:.1f}s)")
    print(f"ratio stack / in-process                   {result['ratio']:8.2f}")
    print(f"apply -> first trial Job                   {result['apply_to_first_job']:8.2f}s")
    print(f"gap, pod Succeeded -> next trial Running   {q(result['gap_pod'])} (target p50 <= 2s)")
    print(f"gap, Job Complete -> next trial Running    {q(result['gap_job'])}")
    print(f"Job Complete -> next trial Job (operator)  {q(result['job_complete_to_next_job'])}")
    for name, d in result["steps"].items():
        print(f"{name:<42} {q(d)}")
    print(f"pod start cost, seen -> Running: sum {result['pod_start_sum']:.1f}s, "
          f"{q(result['pod_start'])}")
    print(f"trial pod Running -> Succeeded: sum {result['trial_process_sum']:.1f}s; the "
          f"trainer's own 'finished in': sum {result['trainer_finished_sum']:.1f}s")
    print(f"process start/teardown (imports, launcher): sum "
          f"{result['process_overhead_sum']:.1f}s, {q(result['process_overhead'])}")
    print(f"in-process trials (Run.execute): sum {result['peer_trial_sum']:.1f}s")
    print(json.dumps(result))


def cleanup(story: Story, core: client.CoreV1Api) -> None:
    for page in story.s3.get_paginator("list_objects_v2").paginate(Bucket=story.bucket):
        for obj in page.get("Contents", []):
            story.s3.delete_object(Bucket=story.bucket, Key=obj["Key"])
    story.s3.delete_bucket(Bucket=story.bucket)
    core.delete_namespace(story.ns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7, help="spec.tuning.seed")
    args = parser.parse_args()
    stack, _ = acquire_stack()
    api = config.new_client_from_config(str(stack.kubeconfig))
    core = client.CoreV1Api(api)
    namespace = f"bench-tuning-{secrets.token_hex(2)}"
    core.create_namespace({"metadata": {"name": namespace}})
    eventually(lambda: stack.kubectl("get", "serviceaccount", "default", "-n", namespace,
                                     check=False).returncode == 0,
               timeout=30, what=f"the default ServiceAccount in {namespace}")
    story = Story(stack, namespace, f"tuning-overhead-{secrets.token_hex(4)}", SIZE)
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    try:
        story.upload()
        log_path = stack.dir / "logs" / f"operator-{namespace}.log"
        print(f"-> search on the stack (operator log {log_path})", flush=True)
        stacked = run_search(stack, api, story, args.seed, log_path)
        print(f"   {stacked['search'].get('summary')} in {stacked['wall']:.1f}s", flush=True)
        print("-> the same trials in this process", flush=True)
        peer = run_peer(stack, stacked, args.seed)
        show(summarise(stacked, peer))
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        cleanup(story, core)


if __name__ == "__main__":
    main()
