"""`python -m tailor_trainer.promote`: carry out a person's approval of a run awaiting it.

With `promotion.policy: Manual` a run whose verdict would promote waits as AwaitingApproval.
When someone approves it (the `tailor.dev/approve: <run id>` annotation), the operator runs
this module once, in a Job from the trainer image with a worker's environment
(TAILOR_TRAININGJOB, TAILOR_RUN_ID, the artifact and model URIs, storage and MLflow settings).
It promotes exactly as the automatic path does, through `pipeline.publish.promote_run`: the
model copied to its production place, `production.json` replaced in one PUT, a registered
MLflow version with the alias moved to it.

It refuses (exit EXIT_PERMANENT, reason ApprovalRefused, nothing changed) unless the run is
complete (its manifest exists) and its metrics.json, for this run id, says AwaitingApproval:
an approval of a rejected run, of another run, or of a run still training would promote a
model the rule never cleared for it. Once done it records the approval in the run's metrics
(`approval`: decision, runId, approvedAt; the manifest's digest follows) and the MLflow tags.
A retried Job whose first attempt already recorded the approval changes nothing and reports
the promotion again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import torch
from tailor_contract import clock, uris
from tailor_contract.constants import (
    REASON_APPROVAL_REFUSED,
    REASON_APPROVED,
    REASON_AWAITING_APPROVAL,
    REASON_PROMOTED,
)
from tailor_contract.trainer_api import (
    ARTIFACT_METRICS,
    EXIT_SUCCESS,
    TerminationSummary,
)

from tailor_trainer import artifacts
from tailor_trainer.config import (
    DEFAULT_TERMINATION_LOG,
    ENV_TERMINATION_LOG,
    RunConfig,
    load_config,
)
from tailor_trainer.dist import World
from tailor_trainer.errors import PermanentError, exit_code
from tailor_trainer.pipeline import publish, summary
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.run import write_termination

log = logging.getLogger("tailor_trainer")


def awaiting(ctx: RunContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's metrics and manifest, when it is complete and its verdict AwaitingApproval;
    else ApprovalRefused saying why."""
    cfg = ctx.cfg
    manifest = artifacts.read_manifest(ctx.store, cfg.artifact_uri)
    raw = ctx.store.get_bytes_or_none(uris.join(cfg.artifact_uri, ARTIFACT_METRICS))
    if manifest is None or raw is None:
        raise PermanentError(REASON_APPROVAL_REFUSED,
                             f"run {cfg.run_id} is not awaiting approval: it has not finished "
                             f"(no manifest.json and metrics.json under {cfg.artifact_uri})")
    metrics: dict[str, Any] = json.loads(raw)
    if metrics.get("runId") != cfg.run_id:
        raise PermanentError(REASON_APPROVAL_REFUSED,
                             f"run {cfg.run_id} is not awaiting approval: {cfg.artifact_uri} "
                             f"holds run {metrics.get('runId')!r}")
    verdict = metrics.get("verdict") or {}
    if verdict.get("reason") != REASON_AWAITING_APPROVAL:
        raise PermanentError(REASON_APPROVAL_REFUSED,
                             f"run {cfg.run_id} is not awaiting approval: its verdict is "
                             f"{verdict.get('reason')} ({verdict.get('message', '')})"[:1024])
    return metrics, manifest


def approve(cfg: RunConfig) -> TerminationSummary:
    """Promote the run awaiting approval and record the approval; see the module docstring."""
    ctx = RunContext.create(cfg, World(rank=0, local_rank=0, size=1,
                                       device=torch.device("cpu")))
    metrics, manifest = awaiting(ctx)
    if metrics.get("approval"):
        log.info("run %s was approved at %s already; nothing to do", cfg.run_id,
                 metrics["approval"].get("approvedAt"))
        return summary.approved(metrics, cfg.artifact_uri,
                                str(manifest.get("run", {}).get("mlflowRunId", "")))
    ctx.tracker.start({"tailor.trainingjob": f"{cfg.namespace}/{cfg.name}",
                       "tailor.model": cfg.model_name, "tailor.task": cfg.spec.task})
    publish.promote_run(ctx, publish.model_files_of(manifest), metrics)
    metrics["approval"] = {"decision": REASON_APPROVED, "runId": cfg.run_id,
                           "approvedAt": clock.stamp()}
    _record(ctx, metrics, manifest)
    ctx.tracker.tags({"tailor.verdict": REASON_PROMOTED, "tailor.approval": REASON_APPROVED})
    ctx.tracker.finish("FINISHED")
    log.info("run %s approved and promoted to %s", cfg.run_id, metrics["promotedModelUri"])
    return summary.approved(metrics, cfg.artifact_uri, ctx.tracker.mlflow_run_id)


def _record(ctx: RunContext, metrics: dict[str, Any], manifest: dict[str, Any]) -> None:
    """metrics.json with the approval, then the manifest with its new digest (still last)."""
    cfg = ctx.cfg
    data = json.dumps(metrics, indent=1).encode()
    ctx.store.put_bytes(uris.join(cfg.artifact_uri, ARTIFACT_METRICS), data)
    files = {**manifest.get("files", {}),
             ARTIFACT_METRICS: {"sha256": artifacts.sha256_bytes(data), "size": len(data)}}
    artifacts.write_manifest(ctx.store, cfg.artifact_uri, files, manifest.get("run", {}))


def main() -> int:
    logging.basicConfig(level=os.environ.get("TAILOR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s promote %(name)s: %(message)s",
                        stream=sys.stderr)
    termination_log = os.environ.get(ENV_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)
    code, cfg = EXIT_SUCCESS, None
    try:
        cfg = load_config()
        termination_log = cfg.termination_log
        outcome = approve(cfg)
    except Exception as exc:
        code = exit_code(exc, "the promotion")
        outcome = summary.failed(exc, cfg.artifact_uri if cfg else "", None)
    write_termination(termination_log, outcome)
    return code


if __name__ == "__main__":
    sys.exit(main())
