"""MLflow tracking: one MLflow run per Tailor run, found again after a restart.

The MLflow run carries the tag `tailor.run_id`, so a restarted worker group appends to the same
run instead of starting a second one. Step metrics are buffered and sent in batches. Without a
tracking URI every call is a no-op and S3 alone holds the record. Tracking failures are logged,
never fatal: the artifacts in S3 are the source of truth.

At publish the run also logs its model as an MLflow pyfunc model (mlflow_model.py), and a
promotion registers that model and moves the alias, so the registry's version loads and predicts
with `mlflow.pyfunc.load_model("models:/<name>@<alias>")`.

A trial of a hyper-parameter search logs a run of its own, `<job>-trial-<n>`, tagged with its
number and the job's run id (`TRIAL_TAG`, `SEARCH_RUN_TAG`); the final run adopts those runs as
its nested children when it starts (`adopt`), so MLflow shows the search under the run it chose.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
RUN_TAG = "tailor.run_id"
ARTIFACT_TAG = "tailor.artifact_uri"
MODEL_URI_TAG = "tailor.model_uri"
"""On a registered version: the promoted model's S3 copy."""
TRIAL_TAG = "tailor.trial"
SEARCH_RUN_TAG = "tailor.searchRunId"
"""On a trial's run: the run id of the job whose search it belongs to."""
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own tag for a nested run (the UI shows it under its parent)."""
FLUSH_EVERY = 50


class Tracker:
    def __init__(self, uri: str | None, experiment: str, run_id: str, run_name: str,
                 artifact_uri: str = "") -> None:
        self.enabled = bool(uri)
        self.uri = uri
        self.experiment = experiment
        self.tailor_run_id = run_id
        self.run_name = run_name
        self.artifact_uri = artifact_uri
        self.mlflow_run_id = ""
        self.model_id = ""
        """The MLflow model `log_model` logged (MLflow 3's LoggedModel id)."""
        self._client: Any = None
        self._buffer: list[Any] = []

    def start(self, tags: dict[str, str]) -> str:
        if not self.enabled:
            return ""
        try:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp else self._client.create_experiment(self.experiment)
            # The run id and the artifact prefix together identify a Tailor run everywhere.
            query = (f"tags.`{RUN_TAG}` = '{self.tailor_run_id}' and "
                     f"tags.`{ARTIFACT_TAG}` = '{self.artifact_uri}'")
            found = self._client.search_runs([exp_id], query, max_results=1)
            if found:
                self.mlflow_run_id = found[0].info.run_id
                if found[0].info.status != "RUNNING":
                    self._client.update_run(self.mlflow_run_id, status="RUNNING")
            else:
                run = self._client.create_run(exp_id, run_name=self.run_name,
                                              tags={RUN_TAG: self.tailor_run_id,
                                                    ARTIFACT_TAG: self.artifact_uri, **tags})
                self.mlflow_run_id = run.info.run_id
        except Exception as exc:
            log.warning("MLflow tracking disabled: %s", exc)
            self.enabled = False
            return ""
        return self.mlflow_run_id

    def adopt(self, tag: str, value: str) -> int:
        """Make the runs of this experiment tagged `tag`=`value` (a search's trials) nested
        children of this run; best effort. Returns how many runs were adopted."""
        if not self.enabled or self._client is None or not self.mlflow_run_id:
            return 0
        adopted = 0
        try:
            experiment = self._client.get_run(self.mlflow_run_id).info.experiment_id
            token = None
            while True:
                page = self._client.search_runs([experiment], f"tags.`{tag}` = '{value}'",
                                                max_results=1000, page_token=token)
                for run in page:
                    if run.info.run_id != self.mlflow_run_id:
                        self._client.set_tag(run.info.run_id, PARENT_TAG, self.mlflow_run_id)
                        adopted += 1
                token = page.token
                if not token:
                    break
        except Exception as exc:
            log.warning("MLflow could not adopt the runs tagged %s=%s: %s", tag, value, exc)
        return adopted

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if not self.enabled or not self.mlflow_run_id:
            return
        try:
            fn(self.mlflow_run_id, *args, **kwargs)
        except Exception as exc:
            log.warning("MLflow %s failed: %s", what, exc)

    def params(self, params: dict[str, Any]) -> None:
        if not self.enabled or self._client is None:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        existing: set[str] = set()
        # Best effort: a restarted run logs only the params it has not logged yet.
        with contextlib.suppress(Exception):
            existing = set(self._client.get_run(self.mlflow_run_id).data.params)
        fresh = [p for p in items if p.key not in existing]
        for start in range(0, len(fresh), 100):
            self._call("params", self._client.log_batch, params=fresh[start:start + 100])

    def tags(self, tags: dict[str, str]) -> None:
        if not self.enabled or self._client is None:
            return
        for key, value in tags.items():
            self._call("tag", self._client.set_tag, key, value)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled or self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in values.items())
        if len(self._buffer) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._buffer and self._client is not None:
            batch, self._buffer = self._buffer, []
            for start in range(0, len(batch), 1000):
                self._call("metrics", self._client.log_batch, metrics=batch[start:start + 1000])

    def artifacts(self, directory: Path, skip: Collection[str] = ()) -> None:
        """The files under `directory` as run artifacts, but for the entries named in `skip`
        (the model directory: the MLflow model logged by `log_model` holds it already)."""
        if self._client is None:
            return
        if not skip:
            self._call("artifacts", self._client.log_artifacts, str(directory))
            return
        for entry in sorted(directory.iterdir()):
            if entry.name in skip:
                continue
            if entry.is_dir():
                self._call("artifacts", self._client.log_artifacts, str(entry), entry.name)
            else:
                self._call("artifacts", self._client.log_artifact, str(entry))

    def log_model(self, model_dir: Path, task: str, labels: list[str]) -> None:
        """The saved model as the run's MLflow pyfunc model ("model"), for the registry.

        Only a tracked run imports mlflow_model (and with it mlflow.pyfunc and pandas).
        """
        if not self.enabled or self._client is None or not self.mlflow_run_id:
            return
        try:
            from tailor_trainer import mlflow_model

            if task not in mlflow_model.INPUTS:
                log.info("no MLflow model for a %s model; the registry gets its S3 URI", task)
                return
            self.model_id = mlflow_model.log_model(
                self._client, self.mlflow_run_id, model_dir, task, labels,
                {RUN_TAG: self.tailor_run_id, ARTIFACT_TAG: self.artifact_uri})
        except Exception as exc:
            log.warning("MLflow model logging failed: %s", exc)

    def logged_model(self) -> str:
        """The MLflow model id of this run's latest logged model, or "" when it has none.

        A promotion Job (manual approval) registers a model another process logged.
        """
        if self.model_id or self._client is None:
            return self.model_id
        from mlflow.entities import LoggedModelStatus

        from tailor_trainer.mlflow_model import MODEL_NAME

        experiment = self._client.get_run(self.mlflow_run_id).info.experiment_id
        found = self._client.search_logged_models(
            [experiment], max_results=20,
            filter_string=f"name = '{MODEL_NAME}' AND source_run_id = '{self.mlflow_run_id}'",
            order_by=[{"field_name": "creation_time", "ascending": False}])
        ready = [m for m in found if m.status == LoggedModelStatus.READY]
        return str(ready[0].model_id) if ready else ""

    def register(self, model_name: str, source: str, alias: str) -> str:
        """A registered-model version for the promoted model, and the alias moved to it.

        The version is the run's MLflow model (what `mlflow.register_model("runs:/<run>/model")`
        resolves to), so `models:/<name>@<alias>` loads and predicts; the S3 copy `source`, the
        source of truth, is its tag `tailor.model_uri`. A run without an MLflow model (logging
        failed, or a custom recipe) registers `source` itself, as a pointer MLflow cannot load.
        """
        if not self.enabled or self._client is None:
            return ""
        try:
            try:
                self._client.get_registered_model(model_name)
            except Exception:
                self._client.create_registered_model(model_name)
            tags = {RUN_TAG: self.tailor_run_id, MODEL_URI_TAG: source}
            model_id = self.logged_model()
            if not model_id:
                log.warning("run %s has no MLflow model: version registered from %s",
                            self.mlflow_run_id, source)
            version = self._client.create_model_version(
                model_name, source=f"models:/{model_id}" if model_id else source,
                run_id=self.mlflow_run_id, tags=tags, model_id=model_id or None)
            self._client.set_registered_model_alias(model_name, alias, version.version)
            return str(version.version)
        except Exception as exc:
            log.warning("MLflow model registration failed: %s", exc)
            return ""

    def finish(self, status: str) -> None:
        self.flush()
        self._call("finish", lambda run_id: self._client.set_terminated(run_id, status=status))
