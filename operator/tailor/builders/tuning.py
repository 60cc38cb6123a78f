"""The worker groups of a search (spec.tuning): one per trial, and the final run.

A trial's group is the job's worker group built for the trial's identity (JobRef.trial: its
own Job, Service, host names, run id and artifact prefix) with the trial's parameters merged
into `hyperparameters` and trainer_api.ENV_TRIAL set, which puts the trainer in trial mode.
The final run is the ordinary worker group with the best trial's parameters merged in and the
search's summary in trainer_api.ENV_SEARCH (for the model card and the MLflow parent run).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from tailor_contract import trainer_api
from tailor_contract.trainingjob import TrainingJobSpec
from tailor_contract.tuning import Tuning

from tailor.builders.trainingjob import JobRef, build_service, build_worker_job


def with_parameters(raw_spec: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The spec with `parameters` (API names, as spec.tuning.searchSpace names them) in place
    of the same hyper-parameters."""
    return {**raw_spec, "hyperparameters": Tuning.merged(raw_spec.get("hyperparameters") or {},
                                                         parameters)}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def build_trial(spec: TrainingJobSpec, raw_spec: dict[str, Any], job: JobRef, *, number: int,
                parameters: dict[str, Any], image: str, attempt: int,
                deadline_seconds: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trial `number`'s headless Service and Indexed Job (attempt `attempt`)."""
    assert spec.tuning is not None
    trial = replace(job, trial=number)
    marker = {"number": number, "metric": spec.tuning.objective.metric,
              "direction": spec.tuning.direction, "searchRunId": job.run_id}
    worker_job = build_worker_job(
        spec, with_parameters(raw_spec, parameters), trial, image=image, attempt=attempt,
        deadline_seconds=deadline_seconds,
        extra_env=[{"name": trainer_api.ENV_TRIAL, "value": _compact(marker)}])
    return build_service(trial), worker_job


def build_final_run(spec: TrainingJobSpec, raw_spec: dict[str, Any], job: JobRef, *,
                    best: dict[str, Any], search: dict[str, Any], image: str, attempt: int,
                    deadline_seconds: int | None) -> dict[str, Any]:
    """The search's final run: the job's own worker group, trained with the best trial's
    parameters and told the search's summary."""
    return build_worker_job(spec, with_parameters(raw_spec, best), job, image=image,
                            attempt=attempt, deadline_seconds=deadline_seconds,
                            extra_env=[{"name": trainer_api.ENV_SEARCH,
                                        "value": _compact(search)}])
