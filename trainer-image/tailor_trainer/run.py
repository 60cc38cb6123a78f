"""One training run, from the spec in the environment to the verdict in S3.

    load config -> recent holdout planned -> (rank 0) data-quality gate + locked test set
    -> split shards on every rank -> DDP fine-tuning -> (rank 0) evaluation on the test set
    (and the recent holdout) against the baselines -> artifacts, manifest last -> promotion
    -> termination message

The stages live in `tailor_trainer.pipeline` (data, baseline, train, evaluate, publish); `Run`
only orders them. Every phase that more than one rank takes part in ends in `dist.agree`, so
an error anywhere reaches every rank and they all exit with the same code. A run whose
manifest already exists is complete: a restarted worker group only finishes its promotion and
reports again.

A trial of a hyper-parameter search (TAILOR_TRIAL) takes the same path as far as training,
reading train/validation only (the linear probe that starts the head included), then ends in
`pipeline.trial.finish`: no baseline comparison, evaluation, profile, publication or
promotion. The final run of a tuned job (TAILOR_SEARCH) is an ordinary run that selects its
epoch by the search's objective and documents the search (`tailor_trainer.search`).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from tailor_contract.trainer_api import EXIT_SUCCESS, TerminationSummary

from tailor_trainer import search
from tailor_trainer.config import (
    DEFAULT_TERMINATION_LOG,
    ENV_TERMINATION_LOG,
    RunConfig,
    load_config,
)
from tailor_trainer.data.quality import QualityReport
from tailor_trainer.dist import World, agree, broadcast, init_world, shutdown
from tailor_trainer.errors import REASON_PREEMPTED, RetryableError, exit_code
from tailor_trainer.pipeline import baseline, data, evaluate, publish, summary, train, trial
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.pipeline.data import LocalData
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.tracking import SEARCH_RUN_TAG, TRIAL_TAG
from tailor_trainer.train import Shard, TrainResult

log = logging.getLogger("tailor_trainer")


def write_termination(path: str, outcome: TerminationSummary) -> None:
    """The pod's termination message; silently nothing where the path is not writable."""
    try:
        with open(path, "w") as handle:
            handle.write(outcome.to_message())
    except OSError:
        pass


def _preempted(signum: int, frame: FrameType | None) -> None:
    raise RetryableError(REASON_PREEMPTED, "stopped by SIGTERM before training started")


class Run:
    def __init__(self, cfg: RunConfig, world: World) -> None:
        self.ctx = RunContext.create(cfg, world)

    def execute(self) -> TerminationSummary:
        ctx, world, main = self.ctx, self.ctx.world, self.ctx.world.is_main
        if ctx.progress is not None:
            ctx.progress.serve(ctx.cfg.metrics_port)
        if ctx.cfg.trial is not None:
            return self._trial()
        done = broadcast(world, agree(world, lambda: publish.completed(ctx) if main else None))
        if done is not None:
            publish.finish_completed(ctx, done)
            quality = QualityReport.from_dict(done.quality) if done.quality else None
            return summary.succeeded(done.metrics, quality, ctx.cfg.artifact_uri,
                                     ctx.tracker.mlflow_run_id)
        if main:
            self._start_tracking()
        recipe, local, train_shard, val_shard = self._data()
        probe, head = baseline.fit_probe(ctx, recipe, train_shard, val_shard)
        result = train.fit(ctx, recipe, train_shard, val_shard, head)
        outputs = train.validation_outputs(ctx, recipe, result, val_shard)
        profile = publish.profile_inputs(ctx, recipe, local, val_shard, outputs)
        outcome = agree(world, lambda: self._evaluate_and_publish(
            recipe, result, local, probe, profile) if main else None)
        outcome = broadcast(world, outcome)
        assert outcome is not None
        return outcome

    def _trial(self) -> TerminationSummary:
        """Trial mode: train on train/validation, report the objective; nothing published."""
        ctx, world, main = self.ctx, self.ctx.world, self.ctx.world.is_main
        if main:
            self._start_tracking()
        recipe, local, train_shard, val_shard = self._data()
        # The probe (fitted on train/validation only) starts the head, as in the final run:
        # the final run then retrains exactly what the best trial trained.
        _probe, head = baseline.fit_probe(ctx, recipe, train_shard, val_shard)
        result = train.fit(ctx, recipe, train_shard, val_shard, head)
        outcome = agree(world, lambda: trial.finish(ctx, result, local) if main else None)
        outcome = broadcast(world, outcome)
        assert outcome is not None
        return outcome

    def _data(self) -> tuple[Recipe, LocalData, Shard, Shard]:
        """Stage 1 with the recipe: the data read, the gate passed, the test set locked."""
        ctx, world, main = self.ctx, self.ctx.world, self.ctx.world.is_main
        ctx.locked = broadcast(world, agree(world, lambda: data.read_locked(ctx) if main
                                            else None))
        local = agree(world, lambda: data.read(ctx))
        # The base model is checked before the gate locks a test set: a bad configuration
        # must leave nothing behind.
        recipe = agree(world, lambda: train.recipe(ctx))
        # So are the inputs (an image can be unreadable); the test rows' are kept for the end.
        train_items, val_items = agree(world, lambda: data.encode(recipe, local))
        agree(world, lambda: data.gate(ctx, recipe, local))
        ctx.labels = broadcast(world, ctx.labels)
        return (recipe, local, *data.shards(ctx.labels, local, train_items, val_items))

    def _start_tracking(self) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        tags = {"tailor.trainingjob": f"{cfg.namespace}/{cfg.name}",
                "tailor.model": cfg.model_name, "tailor.task": ctx.spec.task}
        if cfg.trial is not None:
            tags.update({TRIAL_TAG: str(cfg.trial.number),
                         SEARCH_RUN_TAG: cfg.trial.search_run_id})
        ctx.tracker.start(tags)
        params = self._params()
        if cfg.search is not None:
            params.update(search.mlflow_params(cfg.search))
            ctx.tracker.adopt(SEARCH_RUN_TAG, cfg.run_id)
        ctx.tracker.params(params)

    def _params(self) -> dict[str, Any]:
        """The MLflow run's parameters: the spec's tunable sections and the data's shape."""
        ctx = self.ctx
        spec, data_spec = ctx.spec, ctx.data
        api: dict[str, Any] = spec.to_api()
        out: dict[str, Any] = {}
        for section in ("hyperparameters", "evaluation", "checkpoint", "promotion"):
            for key, value in (api.get(section) or {}).items():
                out[f"{section}.{key}"] = value
        out.update({"task": spec.task, "model.base": ctx.model.base or "",
                    "data.uri": data_spec.uri,
                    "data.additionalUris": ",".join(data_spec.additional_uris or [])[:500],
                    "data.productionUris": ",".join(data_spec.production_uris or [])[:500],
                    "workers": spec.workers, "world_size": ctx.world.size,
                    "split.validation": data_spec.split.validation,
                    "split.test": data_spec.split.test, "split.seed": data_spec.split.seed,
                    "split.testSetVersion": data_spec.split.test_set_version})
        return out

    def _evaluate_and_publish(self, recipe: Recipe, result: TrainResult,
                              local: LocalData, probe: baseline.Probe | None,
                              profile: publish.ProfileInputs) -> TerminationSummary:
        """Rank 0: stages 4 and 5, and the summary of the run."""
        ctx = self.ctx
        metrics = evaluate.evaluate_run(ctx, recipe, result, local, probe)
        publish.publish(ctx, recipe, result.model, metrics, profile,
                        data.recent_manifest(ctx, recipe, local), data.ids_document(local))
        return summary.succeeded(metrics, ctx.quality, ctx.cfg.artifact_uri,
                                 ctx.tracker.mlflow_run_id)

    def gate_outcome(self) -> QualityReport | None:
        """Rank 0: the gate's report once the gate passed (for a later failure's summary)."""
        return self.ctx.quality if self.ctx.gate_passed else None


def main() -> int:
    logging.basicConfig(level=os.environ.get("TAILOR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s rank" + os.environ.get("RANK", "0")
                        + " %(name)s: %(message)s", stream=sys.stderr)
    rank = int(os.environ.get("RANK", "0"))
    faulthandler.enable()  # a native crash leaves every thread's Python stack in the pod log
    signal.signal(signal.SIGTERM, _preempted)
    termination_log = os.environ.get(ENV_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)
    outcome: TerminationSummary
    code = EXIT_SUCCESS
    cfg: RunConfig | None = None
    run: Run | None = None
    started = time.monotonic()
    try:
        cfg = load_config()
        termination_log = cfg.termination_log
        if cfg.spec.task == "custom":
            from tailor_trainer.recipes.custom import exec_custom

            exec_custom(cfg)  # replaces this process
        run = Run(cfg, init_world())
        outcome = run.execute()
    except Exception as exc:
        code = exit_code(exc, "the trainer")
        outcome = summary.failed(exc, cfg.artifact_uri if cfg else "",
                                 run.gate_outcome() if run else None)
    if rank == 0:
        write_termination(termination_log, outcome)
    log.info("finished in %.1fs: %s", time.monotonic() - started, outcome.to_message())
    shutdown()
    return code
