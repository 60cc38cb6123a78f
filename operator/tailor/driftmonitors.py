"""The DriftMonitor controller: periodic checks, metrics, and retraining.

Every `spec.interval` a monitor's window of production logs is compared with the reference
profile (tailor.drift). The result goes to status, conditions, Events and Prometheus metrics.
When a trigger fires (accuracy below threshold, drift, or an alert through the webhook) and
neither the cooldown nor a running retrain forbids it, a retraining TrainingJob is created.

Exactly one TrainingJob per trigger, even across operator restarts: its name is derived from
the trigger's identity (the check's window, or the alert's fingerprint), and the monitor's
status records the retrain (guarded by resourceVersion) before the TrainingJob is created. A
restarted operator finds that record and creates the same name again if it is missing; the API
server's AlreadyExists stops a duplicate.

With retrain.includeProductionData, the window's labelled production examples are written to one
object per retrain (tailor.drift.production) before its TrainingJob is created, and named in its
spec.data.additionalUris; the record keeps the window, so a restart writes the same object again.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tailor import metrics
from tailor.api import constants as c
from tailor.api import names
from tailor.api.common import parse_duration
from tailor.api.driftmonitor import DriftMonitorSpec
from tailor.api.trainingjob import MAX_ADDITIONAL_URIS, TrainingJobSpec
from tailor.conditions import find, upsert
from tailor.k8s import Conflict, Kube, Obj
from tailor.settings import OperatorSettings

log = logging.getLogger("tailor.driftmonitors")
PROFILE_FILE = "reference-profile.json"
CHECK_WORKERS = 2


class CheckError(Exception):
    """A check that cannot run yet; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Trigger:
    """Why a retrain is wanted; `identity` makes its TrainingJob's name."""

    reason: str  # AccuracyBelowThreshold, DriftDetected or Alert
    identity: str
    message: str
    window_start: str | None = None
    window_end: str | None = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _retrain_record(name: str, trigger: Trigger) -> dict[str, str]:
    """status.lastRetrain: enough to create the same TrainingJob (and the same production
    data) again after a restart."""
    record = {"name": name, "reason": trigger.reason, "time": _stamp(_now()),
              "trigger": trigger.identity}
    if trigger.window_start:
        record["windowStart"] = trigger.window_start
    if trigger.window_end:
        record["windowEnd"] = trigger.window_end
    return record


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class DriftMonitorController:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._in_flight: set[tuple[str, str]] = set()
        self._pool = ThreadPoolExecutor(CHECK_WORKERS, thread_name_prefix="drift-check")

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    # ------------------------------------------------------------------ scheduling
    @staticmethod
    def due(body: Obj, now: datetime.datetime) -> bool:
        status = body.get("status") or {}
        if status.get("observedGeneration") != body["metadata"].get("generation"):
            return True
        last = status.get("lastCheckTime")
        if not last:
            return True
        try:
            interval = parse_duration((body.get("spec") or {}).get("interval", "5m"))
        except ValueError:
            return False
        return now - _parse(last) >= interval

    def schedule(self, monitors: list[Obj]) -> None:
        """Start the checks that are due (at most one at a time per monitor)."""
        now = _now()
        for body in monitors:
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            if body["metadata"].get("deletionTimestamp") or not self.due(body, now):
                continue
            with self._guard:
                if key in self._in_flight:
                    continue
                self._in_flight.add(key)
            self._pool.submit(self._run_check, key)

    def _run_check(self, key: tuple[str, str]) -> None:
        try:
            with self._lock(key):
                body = self.kube.get_driftmonitor(*key)  # the latest: status is our state
                if body is not None and self.due(body, _now()):
                    self.check(body)
        except Exception:
            log.exception("drift check of %s/%s failed", *key)
        finally:
            with self._guard:
                self._in_flight.discard(key)

    # ------------------------------------------------------------------ one check
    def check(self, body: Obj) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        generation = body["metadata"].get("generation")
        status = dict(body.get("status") or {})
        status["observedGeneration"] = generation
        now = _now()
        started = time.monotonic()
        try:
            spec = DriftMonitorSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            self._fail(body, status, c.REASON_INVALID_SPEC, str(error.errors()[0]["msg"]),
                       stalled=True)
            return
        # The drift stack (numpy, scipy, pyarrow: about 150 MiB resident) is imported on the
        # first check, so an operator without DriftMonitors never carries it.
        from tailor.drift import CheckSettings, ReferenceProfile, read_log_batches, run_check
        from tailor.drift.logs import s3_filesystem

        try:
            storage = self._storage(key[0], spec)
            profile_uri = self._profile_uri(key[0], spec)
            profile = ReferenceProfile.from_json(self._read_json(profile_uri, storage))
            window = parse_duration(spec.production.window)
            filesystem = s3_filesystem(**storage)
            settings = CheckSettings.from_spec(spec)
            ground_truth = None
            if spec.production.ground_truth_uri:
                ground_truth = read_log_batches(spec.production.ground_truth_uri,
                                                format=spec.production.format,
                                                filesystem=filesystem)
            result = run_check(
                profile,
                read_log_batches(spec.production.predictions_uri,
                                 format=spec.production.format, filesystem=filesystem),
                ground_truth, settings, window_start=now - window, window_end=now)
        except CheckError as error:
            self._fail(body, status, error.reason, str(error),
                       stalled=error.reason == c.REASON_SECRET_NOT_FOUND)
            return
        except Exception as error:  # storage unreachable, unreadable logs, a bad profile
            log.warning("check of %s/%s failed: %s", *key, error)
            self._fail(body, status, c.REASON_STORAGE_ERROR, f"{type(error).__name__}: {error}")
            return
        finally:
            metrics.CHECK_SECONDS.observe(time.monotonic() - started)

        status |= result.to_status()
        status["lastCheckTime"] = _stamp(now)
        status["profileUri"] = profile_uri
        conditions = status.get("conditions")

        def set_condition(kind: str, value: bool | None, reason: str, message: str) -> None:
            nonlocal conditions
            conditions = upsert(conditions, kind, value, reason, message, generation)

        set_condition(c.CONDITION_READY, True, c.REASON_CHECKED,
                      f"checked {result.predictions} predictions, {result.labeled} labelled")
        set_condition(c.CONDITION_STALLED, False, c.REASON_CHECKED, "")
        set_condition(c.CONDITION_RECONCILING, False, c.REASON_CHECKED, "")
        if not result.sufficient_samples:
            set_condition(c.CONDITION_DRIFT_DETECTED, None, c.REASON_INSUFFICIENT_SAMPLES,
                          f"{result.predictions} predictions in the window; "
                          f"{spec.production.min_samples} needed")
        elif result.drift_detected:
            reason = c.REASON_FEATURE_DRIFT if result.feature_drift else \
                c.REASON_PREDICTION_DRIFT
            set_condition(c.CONDITION_DRIFT_DETECTED, True, reason, result.drift_reason)
        else:
            set_condition(c.CONDITION_DRIFT_DETECTED, False, c.REASON_NO_DRIFT,
                          f"{status.get('driftSummary', '0/0')} features drifted")
        accuracy = result.accuracy
        if spec.checks.accuracy is None:
            set_condition(c.CONDITION_ACCURACY_BELOW_THRESHOLD, False, c.REASON_NOT_APPLICABLE,
                          "no accuracy check is configured")
        elif accuracy is None or accuracy.value is None or \
                result.labeled < spec.production.min_labeled:
            set_condition(c.CONDITION_ACCURACY_BELOW_THRESHOLD, None,
                          c.REASON_INSUFFICIENT_SAMPLES,
                          f"{result.labeled} labelled predictions in the window; "
                          f"{spec.production.min_labeled} needed")
        else:
            text = (f"{accuracy.metric} {accuracy.value:.3f} (CI {accuracy.lower:.3f}-"
                    f"{accuracy.upper:.3f}, n={accuracy.samples}); threshold "
                    f"{spec.checks.accuracy.threshold}")
            set_condition(c.CONDITION_ACCURACY_BELOW_THRESHOLD, result.accuracy_alert,
                          c.REASON_ACCURACY_BELOW_THRESHOLD if result.accuracy_alert
                          else c.REASON_ACCURACY_OK, text)
        status["conditions"] = conditions
        self._export(key, spec, result, status)

        triggers = []
        window_id = f"{body['metadata']['uid']}:{status['window'].get('end', _stamp(now))}"
        if result.accuracy_alert and spec.retrains_on(c.TRIGGER_ACCURACY_BELOW_THRESHOLD):
            below = find(conditions, c.CONDITION_ACCURACY_BELOW_THRESHOLD) or {}
            triggers.append(Trigger(c.TRIGGER_ACCURACY_BELOW_THRESHOLD,
                                    f"{window_id}:{c.TRIGGER_ACCURACY_BELOW_THRESHOLD}",
                                    below.get("message", ""), status["window"].get("start"),
                                    status["window"].get("end")))
        if result.drift_detected and spec.retrains_on(c.TRIGGER_DRIFT_DETECTED):
            triggers.append(Trigger(c.TRIGGER_DRIFT_DETECTED,
                                    f"{window_id}:{c.TRIGGER_DRIFT_DETECTED}",
                                    result.drift_reason, status["window"].get("start"),
                                    status["window"].get("end")))
        self._decide(body, spec, status, triggers[0] if triggers else None)

    def _fail(self, body: Obj, status: Obj, reason: str, message: str, *,
              stalled: bool = False) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        generation = body["metadata"].get("generation")
        metrics.CHECK_ERRORS.labels(*key, reason).inc()
        conditions = status.get("conditions")
        conditions = upsert(conditions, c.CONDITION_READY, False, reason, message, generation)
        conditions = upsert(conditions, c.CONDITION_STALLED, stalled, reason,
                            message if stalled else "", generation)
        conditions = upsert(conditions, c.CONDITION_RECONCILING, not stalled, reason,
                            "" if stalled else message, generation)
        for kind in (c.CONDITION_DRIFT_DETECTED, c.CONDITION_ACCURACY_BELOW_THRESHOLD,
                     c.CONDITION_RETRAINING):
            if find(conditions, kind) is None:
                conditions = upsert(conditions, kind, None, reason, "no check yet", generation)
        status["conditions"] = conditions
        status["phase"] = "Error" if stalled else status.get("phase", "Pending")
        # A failed check is retried at the next interval, not in a tight loop.
        status["lastCheckTime"] = _stamp(_now())
        if status != body.get("status"):
            self.kube.patch_driftmonitor_status(body, status, precondition=False)
            old = find((body.get("status") or {}).get("conditions"), c.CONDITION_READY) or {}
            if old.get("reason") != reason:
                self.kube.event(body, "Warning", reason, message)

    # ------------------------------------------------------------------ inputs
    def _storage(self, namespace: str, spec: DriftMonitorSpec) -> dict[str, Any]:
        storage: dict[str, Any] = {"endpoint": spec.storage.endpoint,
                                   "region": spec.storage.region}
        if not spec.storage.endpoint and self.settings.default_s3_endpoint:
            storage["endpoint"] = self.settings.default_s3_endpoint
            storage["region"] = self.settings.default_s3_region or spec.storage.region
        secret = spec.storage.credentials_secret
        if secret is not None:
            access = self.kube.secret_value(namespace, secret.name, secret.access_key_id_key)
            key = self.kube.secret_value(namespace, secret.name, secret.secret_access_key_key)
            if access is None or key is None:
                raise CheckError(c.REASON_SECRET_NOT_FOUND,
                                 f"Secret {secret.name!r} or its keys "
                                 f"{secret.access_key_id_key!r}/{secret.secret_access_key_key!r}"
                                 f" not found in {namespace}")
            storage |= {"access_key": access, "secret_key": key}
        return storage

    def _profile_uri(self, namespace: str, spec: DriftMonitorSpec) -> str:
        if spec.model.profile_uri:
            return spec.model.profile_uri
        assert spec.model.training_job is not None
        job = self.kube.get_trainingjob(namespace, spec.model.training_job)
        if job is None:
            raise CheckError(c.REASON_TRAININGJOB_NOT_FOUND,
                             f"TrainingJob {spec.model.training_job!r} not found")
        artifacts = (job.get("status") or {}).get("artifacts") or {}
        uri = artifacts.get("referenceProfileUri") or (
            artifacts["runUri"].rstrip("/") + "/" + PROFILE_FILE if artifacts.get("runUri")
            else None)
        if not uri:
            raise CheckError(c.REASON_PROFILE_NOT_FOUND,
                             f"TrainingJob {spec.model.training_job!r} has no reference "
                             f"profile yet (it has not succeeded)")
        return str(uri)

    @staticmethod
    def _read_json(uri: str, storage: dict[str, Any]) -> dict[str, Any]:
        import boto3  # with the drift stack, on the first check

        s3 = boto3.client("s3", endpoint_url=storage.get("endpoint"),
                          region_name=storage.get("region"),
                          aws_access_key_id=storage.get("access_key"),
                          aws_secret_access_key=storage.get("secret_key"))
        bucket, key = _split_s3(uri)
        try:
            data: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"]
                                              .read())
        except s3.exceptions.NoSuchKey as error:
            raise CheckError(c.REASON_PROFILE_NOT_FOUND, f"{uri} does not exist") from error
        return data

    # ------------------------------------------------------------------ metrics
    @staticmethod
    def _export(key: tuple[str, str], spec: DriftMonitorSpec, result: Any, status: Obj) -> None:
        for feature in status.get("features", []):
            if feature.get("score") is not None:
                metrics.FEATURE_DRIFT.labels(*key, feature["name"], feature["method"]).set(
                    feature["score"])
        prediction = status.get("predictionDrift")
        if prediction and prediction.get("score") is not None:
            metrics.PREDICTION_DRIFT.labels(*key, prediction["method"]).set(prediction["score"])
        metrics.DRIFT_DETECTED.labels(*key).set(1 if result.drift_detected else 0)
        metrics.LABEL_COVERAGE.labels(*key).set(status["window"].get("labelCoverage", 0))
        metrics.WINDOW_PREDICTIONS.labels(*key).set(status["window"].get("predictions", 0))
        accuracy = status.get("accuracy")
        if spec.checks.accuracy is not None and accuracy:
            metric = spec.checks.accuracy.metric
            metrics.MODEL_METRIC.labels(*key, metric).set(accuracy["value"])
            metrics.MODEL_METRIC_LOWER.labels(*key, metric).set(accuracy["lower"])
            metrics.MODEL_METRIC_THRESHOLD.labels(*key, metric).set(
                spec.checks.accuracy.threshold)

    # ------------------------------------------------------------------ retraining
    def _decide(self, body: Obj, spec: DriftMonitorSpec, status: Obj,
                trigger: Trigger | None) -> None:
        """Record the check (and a retrain, if one starts) in status, then create it."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        generation = body["metadata"].get("generation")
        retrain: Obj | None = None
        running = self._running_retrains(key)
        conditions = status["conditions"]
        if trigger is not None:
            blocked = self._blocked(spec, status, running)
            if blocked is None:
                retrain = self._retrain_object(body, spec, trigger)
                status["lastRetrain"] = _retrain_record(retrain["metadata"]["name"], trigger)
                status["retrainCount"] = int(status.get("retrainCount", 0)) + 1
                conditions = upsert(conditions, c.CONDITION_RETRAINING, True,
                                    c.REASON_RETRAIN_CREATED,
                                    f"created TrainingJob {retrain['metadata']['name']}: "
                                    f"{trigger.message}", generation)
            else:
                conditions = upsert(conditions, c.CONDITION_RETRAINING, bool(running),
                                    blocked[0], blocked[1], generation)
        else:
            conditions = upsert(conditions, c.CONDITION_RETRAINING, bool(running),
                                c.REASON_RETRAIN_RUNNING if running else
                                self._last_outcome(key, status),
                                f"TrainingJob {running[0]} is running" if running else "",
                                generation)
        status["conditions"] = conditions
        status["phase"] = self._phase(status, retrain is not None or bool(running))
        old = body.get("status") or {}
        try:
            patched = self.kube.patch_driftmonitor_status(body, status)
        except Conflict:
            return  # changed meanwhile (an alert's retrain): the next interval checks again
        if patched is None:
            return
        self._transition_events(body, old, status)
        if retrain is not None:
            assert trigger is not None
            self._create_retrain(body, spec, retrain, trigger)
        else:
            self._ensure_recorded_retrain(body, spec, status)

    def _create_retrain(self, body: Obj, spec: DriftMonitorSpec, retrain: Obj,
                        trigger: Trigger) -> bool:
        """Write the production data (if folded in), then create the TrainingJob. False when
        the data could not be written: the retrain stays recorded and a later check creates it
        (``_ensure_recorded_retrain``)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        name = retrain["metadata"]["name"]
        try:
            folded = self._fold_production_data(body, spec, retrain, trigger)
        except Exception as error:  # storage unreachable, unreadable logs
            log.warning("production data of %s/%s not written: %s", key[0], name, error)
            self.kube.event(body, "Warning", c.REASON_PRODUCTION_DATA_FAILED,
                            f"could not write the production data of retrain {name} "
                            f"({type(error).__name__}: {error}); the next check tries again")
            return False
        if self.kube.create_trainingjob(retrain) is not None:
            metrics.RETRAINS.labels(*key, trigger.reason).inc()
            self.kube.event(body, "Normal", c.REASON_RETRAIN_CREATED,
                            f"created retraining TrainingJob {name} ({trigger.reason}): "
                            f"{trigger.message}" + (f"; {folded}" if folded else ""))
        return True

    def _fold_production_data(self, body: Obj, spec: DriftMonitorSpec, retrain: Obj,
                              trigger: Trigger) -> str:
        """Write the trigger window's labelled production examples under the model's output
        and name them in the retrain's spec.data.additionalUris, with their URI and row count
        in its lineage annotation. Returns a note for the Event ('' when nothing is folded).

        Applies when retrain.includeProductionData is on, the monitor has ground truth, the
        trigger has a window and the retrain trains on data with an output (not a custom job
        without them). The columns: the retrain's id and label columns (from the log's id and
        the ground truth's label), its text or image column, its group column and the reference
        profile's features, each copied from the prediction log under the same name.
        """
        job_spec = retrain["spec"]
        if not (spec.retrain.include_production_data and spec.production.ground_truth_uri
                and trigger.window_end and job_spec.get("data") and job_spec.get("output")):
            return ""
        namespace, name = retrain["metadata"]["namespace"], retrain["metadata"]["name"]
        parsed = TrainingJobSpec.model_validate(job_spec)
        assert parsed.data is not None and parsed.output is not None
        present = list(parsed.data.additional_uris or [])
        uri = names.production_data_uri(parsed.output.uri,
                                        retrain["metadata"]["labels"][c.LABEL_MODEL], name)
        if uri not in present and len(present) >= MAX_ADDITIONAL_URIS:
            return (f"production data not folded in: the template already names "
                    f"{MAX_ADDITIONAL_URIS} additional URIs")
        from tailor.drift import LabelIndex, ReferenceProfile, read_log_batches
        from tailor.drift.logs import s3_filesystem
        from tailor.drift.production import LabelledExamples, ProductionColumns, write_parquet

        storage = self._storage(namespace, spec)
        filesystem = s3_filesystem(**storage)
        profile = ReferenceProfile.from_json(
            self._read_json(self._profile_uri(namespace, spec), storage))
        data_columns = parsed.data.columns
        model_input = data_columns.text or data_columns.image
        inputs = [c for c in (model_input, data_columns.group) if c] + list(profile.features)
        log_columns = spec.production.columns
        columns = ProductionColumns(
            log_id=log_columns.id, log_timestamp=log_columns.timestamp,
            id=data_columns.id, label=data_columns.label,
            inputs=tuple(dict.fromkeys(inputs)), required=(model_input,) if model_input else ())
        labels = LabelIndex.from_batches(
            read_log_batches(spec.production.ground_truth_uri,
                             format=spec.production.format, filesystem=filesystem),
            id_column=log_columns.id, label_column=log_columns.label,
            timestamp_column=log_columns.timestamp)
        end = _parse(trigger.window_end)
        start = _parse(trigger.window_start) if trigger.window_start else \
            end - parse_duration(spec.production.window)
        examples = LabelledExamples(
            read_log_batches(spec.production.predictions_uri, format=spec.production.format,
                             filesystem=filesystem),
            labels, columns, window_start=start, window_end=end)
        rows = write_parquet(examples, uri, filesystem)
        lineage: dict[str, Any] = {"rows": rows}
        if rows:
            lineage["uri"] = uri
            data = dict(job_spec["data"])
            data["additionalUris"] = [*(u for u in present if u != uri), uri]
            retrain["spec"] = {**job_spec, "data": data}
        if examples.truncated:
            lineage["truncated"] = True
        annotations = retrain["metadata"]["annotations"]
        trigger_annotation = json.loads(annotations[c.ANNOTATION_TRIGGER])
        trigger_annotation["productionData"] = lineage
        annotations[c.ANNOTATION_TRIGGER] = json.dumps(trigger_annotation, separators=(",", ":"))
        if not rows:
            return "no labelled production examples in the window to fold in"
        return (f"folded in {rows} labelled production examples ({uri})"
                + (f", {examples.skipped} left out" if examples.skipped else ""))

    def _ensure_recorded_retrain(self, body: Obj, spec: DriftMonitorSpec, status: Obj) -> None:
        """If the operator died between recording a retrain and creating it, create it now."""
        last = status.get("lastRetrain") or {}
        if not last.get("name") or not spec.retrain.enabled:
            return
        cooldown = parse_duration(spec.retrain.cooldown)
        if _now() - _parse(last["time"]) > max(cooldown, datetime.timedelta(hours=1)):
            return
        namespace = body["metadata"]["namespace"]
        if self.kube.get_trainingjob(namespace, last["name"]) is None and \
                last["name"] == names.retrain_job_name(body["metadata"]["name"], last["trigger"]):
            trigger = Trigger(last["reason"], last["trigger"], "recorded before a restart",
                              last.get("windowStart"), last.get("windowEnd"))
            self._create_retrain(body, spec, self._retrain_object(body, spec, trigger), trigger)

    def _running_retrains(self, key: tuple[str, str]) -> list[str]:
        jobs = self.kube.list_trainingjobs(key[0], f"{c.LABEL_DRIFTMONITOR}={key[1]}")
        return sorted(j["metadata"]["name"] for j in jobs
                      if (j.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))

    def _last_outcome(self, key: tuple[str, str], status: Obj) -> str:
        last = (status.get("lastRetrain") or {}).get("name")
        if not last:
            return c.REASON_NOT_APPLICABLE
        job = self.kube.get_trainingjob(key[0], last)
        phase = ((job or {}).get("status") or {}).get("phase")
        return {"Succeeded": c.REASON_RETRAIN_SUCCEEDED, "Failed": c.REASON_RETRAIN_FAILED
                }.get(str(phase), c.REASON_RETRAIN_CREATED)

    @staticmethod
    def _blocked(spec: DriftMonitorSpec, status: Obj, running: list[str]
                 ) -> tuple[str, str] | None:
        if running and spec.retrain.concurrency_policy == "Forbid":
            return c.REASON_RETRAIN_RUNNING, f"TrainingJob {running[0]} is still running"
        last = (status.get("lastRetrain") or {}).get("time")
        if last:
            until = _parse(last) + parse_duration(spec.retrain.cooldown)
            if _now() < until:
                return c.REASON_COOLDOWN, f"the cooldown lasts until {_stamp(until)}"
        return None

    @staticmethod
    def _phase(status: Obj, retraining: bool) -> str:
        conditions = status.get("conditions")

        def true(kind: str) -> bool:
            condition = find(conditions, kind)
            return condition is not None and condition.get("status") == "True"

        if retraining:
            return "Retraining"
        if true(c.CONDITION_ACCURACY_BELOW_THRESHOLD):
            return "Degraded"
        if true(c.CONDITION_DRIFT_DETECTED):
            return "Drifting"
        return "Healthy"

    def _transition_events(self, body: Obj, old: Obj, new: Obj) -> None:
        for kind in (c.CONDITION_DRIFT_DETECTED, c.CONDITION_ACCURACY_BELOW_THRESHOLD):
            before = find(old.get("conditions"), kind) or {}
            after = find(new.get("conditions"), kind) or {}
            if after.get("status") == "True" and before.get("status") != "True":
                self.kube.event(body, "Warning", after["reason"], after.get("message", ""))
            elif after.get("status") == "False" and before.get("status") == "True":
                self.kube.event(body, "Normal", after["reason"], after.get("message", ""))

    def _retrain_object(self, body: Obj, spec: DriftMonitorSpec, trigger: Trigger) -> Obj:
        """The retraining TrainingJob: the template, or a clone of the monitored job's spec,
        for the same model (so its promotion gate compares with the current production
        model), with the trigger as lineage."""
        namespace, monitor = body["metadata"]["namespace"], body["metadata"]["name"]
        labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        if spec.retrain.template is not None:
            job_spec = spec.retrain.template.spec.model_dump(by_alias=True, exclude_none=True)
            meta = spec.retrain.template.metadata
            if meta is not None:
                labels |= meta.labels or {}
                annotations |= meta.annotations or {}
            model_name = spec.retrain.template.spec.model_name(spec.model.training_job or
                                                                monitor)
        else:
            assert spec.model.training_job is not None
            source = self.kube.get_trainingjob(namespace, spec.model.training_job)
            if source is None:
                raise CheckError(c.REASON_TRAININGJOB_NOT_FOUND,
                                 f"TrainingJob {spec.model.training_job!r} not found")
            job_spec = dict(source["spec"])
            model_name = TrainingJobSpec.model_validate(job_spec).model_name(
                spec.model.training_job)
        if job_spec.get("task") != "custom":
            job_spec.setdefault("model", {})["name"] = model_name
        name = names.retrain_job_name(monitor, trigger.identity)
        labels |= {c.LABEL_DRIFTMONITOR: monitor, c.LABEL_MODEL: model_name}
        annotations[c.ANNOTATION_TRIGGER] = json.dumps({
            "driftMonitor": monitor, "reason": trigger.reason, "message": trigger.message[:1024],
            "windowStart": trigger.window_start, "windowEnd": trigger.window_end,
            "time": _stamp(_now())}, separators=(",", ":"))
        return {"apiVersion": c.API_VERSION, "kind": c.TRAININGJOB_KIND,
                "metadata": {"name": name, "namespace": namespace, "labels": labels,
                             "annotations": annotations},
                "spec": job_spec}

    # ------------------------------------------------------------------ alerts
    def alert(self, body: Obj, alert: Obj) -> str:
        """Start a retrain for a firing alert about this monitor; returns the outcome."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        try:
            spec = DriftMonitorSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return "invalid-monitor"
        if not spec.retrains_on(c.TRIGGER_ALERT):
            return "alerts-do-not-retrain"
        identity = f"alert:{alert.get('fingerprint', '')}:{alert.get('startsAt', '')}"
        summary = (alert.get("annotations") or {}).get("summary") or \
            (alert.get("labels") or {}).get("alertname", "alert")
        with self._lock(key):
            for _ in range(3):
                fresh = self.kube.get_driftmonitor(*key)
                if fresh is None:
                    return "monitor-gone"
                status = dict(fresh.get("status") or {})
                # The alert is about the metric of the last check: its window is the data.
                window = status.get("window") or {}
                end = window.get("end") or _stamp(_now())
                start = window.get("start") or _stamp(
                    _parse(end) - parse_duration(spec.production.window))
                trigger = Trigger(c.TRIGGER_ALERT, identity, f"alert: {summary}", start, end)
                name = names.retrain_job_name(key[1], identity)
                if (status.get("lastRetrain") or {}).get("trigger") == identity or \
                        self.kube.get_trainingjob(key[0], name) is not None:
                    return "duplicate"
                blocked = self._blocked(spec, status, self._running_retrains(key))
                if blocked is not None:
                    return blocked[0]
                retrain = self._retrain_object(fresh, spec, trigger)
                generation = fresh["metadata"].get("generation")
                status["lastRetrain"] = _retrain_record(name, trigger)
                status["retrainCount"] = int(status.get("retrainCount", 0)) + 1
                status["conditions"] = upsert(status.get("conditions"), c.CONDITION_RETRAINING,
                                              True, c.REASON_RETRAIN_CREATED,
                                              f"created TrainingJob {name}: {trigger.message}",
                                              generation)
                status["phase"] = "Retraining"
                try:
                    if self.kube.patch_driftmonitor_status(fresh, status) is None:
                        return "monitor-gone"
                except Conflict:
                    continue
                if not self._create_retrain(fresh, spec, retrain, trigger):
                    return "retrain-deferred"
                return "retrain-created"
        return "conflict"
