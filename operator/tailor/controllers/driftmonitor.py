"""The DriftMonitor controller: schedules checks, reads their inputs and applies decisions.

Every `spec.interval` (and at once when the spec changes) a monitor's window of production logs
is compared with the reference profile (tailor.drift). What that means (status, conditions,
Events, whether a retrain starts) is decided by the pure `tailor.assess.driftmonitor`; this
module reads the inputs (the spec's Secret, the profile and logs in the object store, the
monitor's retraining TrainingJobs) and applies the decision: the status patch, Events,
Prometheus metrics, and the retraining TrainingJob (`tailor.builders.retrain`).

Exactly one TrainingJob per trigger, even across operator restarts: its name is derived from
the trigger's identity (the check's window, or the alert's fingerprint), and the monitor's
status records the retrain (guarded by resourceVersion) before the TrainingJob is created. A
restarted operator finds that record and creates the same name again if it is missing; the API
server's AlreadyExists stops a duplicate.

With retrain.includeProductionData, the window's labelled production examples are written to one
object per retrain (tailor.drift.production) before its TrainingJob is created, and named in its
spec.data.productionUris; the record keeps the window, so a restart writes the same object again.

Each check first reads the monitored model's production pointer (`production.json`): after a
promotion it compares with the promoted run's reference profile and counts only the predictions
made since the promotion (tailor.assess.drift_reference decides; this module reads).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pydantic import ValidationError
from tailor_contract import clock
from tailor_contract import constants as c
from tailor_contract.common import parse_duration
from tailor_contract.driftmonitor import DriftMonitorSpec, RetrainTrigger

from tailor.assess import drift_reference
from tailor.assess import driftmonitor as assess
from tailor.assess.drift_reference import Reference
from tailor.assess.drift_status import check_settings
from tailor.assess.driftmonitor import Decision, Failure, Retrains
from tailor.builders.retrain import (
    ProductionDataPlan,
    production_data_plan,
    retrain_trainingjob,
    with_production_data,
)
from tailor.controllers.keyed_locks import KeyedLocks
from tailor.io import metrics, objectstore
from tailor.io.k8s import Conflict, Kube, Obj
from tailor.settings import OperatorSettings

if TYPE_CHECKING:
    from tailor.drift import CheckResult, ReferenceProfile

log = logging.getLogger("tailor.controllers.driftmonitor")
CHECK_WORKERS = 2
Key = tuple[str, str]


class CheckError(Exception):
    """An input a check cannot do without is missing (a Secret, a TrainingJob, a profile)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class DriftMonitorController:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks = KeyedLocks()
        self._guard = threading.Lock()
        self._in_flight: set[Key] = set()
        self._pool = ThreadPoolExecutor(CHECK_WORKERS, thread_name_prefix="drift-check")

    # ------------------------------------------------------------------ scheduling
    def schedule(self, monitors: list[Obj]) -> None:
        """Start the checks that are due (at most one at a time per monitor)."""
        now = clock.now()
        for body in monitors:
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            if body["metadata"].get("deletionTimestamp") or not assess.due(body, now):
                continue
            with self._guard:
                if key in self._in_flight:
                    continue
                self._in_flight.add(key)
            self._pool.submit(self._run_check, key)

    def resync(self, body: Obj) -> bool:
        """Re-read one monitor from the API and start its check if due. The loop above decides
        from Kopf's index every second and a failed check is due again at once; this covers an
        index that missed an event (a spec change makes a check due now). True if it exists."""
        fresh = self.kube.get_driftmonitor(body["metadata"]["namespace"],
                                           body["metadata"]["name"])
        if fresh is None:
            return False
        metrics.RESYNCS.labels("DriftMonitor").inc()
        self.schedule([fresh])
        return True

    def _run_check(self, key: Key) -> None:
        try:
            with self._locks[key]:
                body = self.kube.get_driftmonitor(*key)  # the latest: status is our state
                if body is None:
                    self._locks.discard(key)
                elif assess.due(body, clock.now()):
                    self.check(body)
        except Exception:
            log.exception("drift check of %s/%s failed", *key)
        finally:
            with self._guard:
                self._in_flight.discard(key)

    # ------------------------------------------------------------------ one check
    def check(self, body: Obj) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        now = clock.now()
        try:
            spec = DriftMonitorSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            failure = Failure(c.REASON_INVALID_SPEC, str(error.errors()[0]["msg"]))
            self._apply_failure(body, assess.failed(body, failure, now))
            return
        started = time.monotonic()
        try:
            result, reference, source = self._observe(key[0], spec, now)
        except Exception as error:
            if isinstance(error, CheckError):
                failure = error.failure
            else:  # storage unreachable, unreadable logs, a bad profile
                log.warning("check of %s/%s failed: %s", *key, error)
                failure = Failure(c.REASON_STORAGE_ERROR, f"{type(error).__name__}: {error}")
            self._apply_failure(body, assess.failed(body, failure, now))
            return
        finally:
            metrics.CHECK_SECONDS.observe(time.monotonic() - started)
        decision = assess.checked(body, spec, result, reference, self._retrains(key), now)
        _export(key, decision.status, result)
        try:
            patched = self.kube.patch_driftmonitor_status(body, decision.status)
        except Conflict:
            return  # changed meanwhile (an alert's retrain): the next interval checks again
        if patched is None:
            return
        self._post(body, decision)
        if decision.retrain is not None:
            self._create_retrain(body, spec, decision.retrain, source)

    def _observe(self, namespace: str, spec: DriftMonitorSpec, now: datetime.datetime
                 ) -> tuple[CheckResult, Reference, Obj | None]:
        """Run the check: the result, what it compared with and the monitored TrainingJob."""
        # The drift stack (numpy, scipy, pyarrow: about 150 MiB resident) is imported on the
        # first check, so an operator without DriftMonitors never carries it.
        from tailor.drift import read_log_batches, run_check

        store = self._storage(namespace, spec)
        source = self._source(namespace, spec)
        reference = self._reference(spec, source, store)
        profile = self._profile(reference.profile_uri, store)
        filesystem = objectstore.filesystem(store)
        production = spec.production
        ground_truth = None
        if production.ground_truth_uri:
            ground_truth = read_log_batches(production.ground_truth_uri,
                                            format=production.format, filesystem=filesystem)
        predictions = read_log_batches(production.predictions_uri, format=production.format,
                                       filesystem=filesystem)
        start = reference.window_start(now, parse_duration(production.window))
        result = run_check(profile, predictions, ground_truth, check_settings(spec),
                           window_start=start, window_end=now)
        return result, reference, source

    def _apply_failure(self, body: Obj, decision: Decision) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        metrics.CHECK_ERRORS.labels(*key, decision.error).inc()
        if decision.status != body.get("status"):
            self.kube.patch_driftmonitor_status(body, decision.status, precondition=False)
            self._post(body, decision)

    def _post(self, body: Obj, decision: Decision) -> None:
        for event in decision.events:
            self.kube.event(body, event.type, event.reason, event.message)

    # ------------------------------------------------------------------ inputs
    def _storage(self, namespace: str, spec: DriftMonitorSpec) -> objectstore.Storage:
        try:
            return objectstore.storage(self.kube, namespace, spec.storage,
                                       default_endpoint=self.settings.default_s3_endpoint,
                                       default_region=self.settings.default_s3_region)
        except objectstore.SecretNotFound as error:
            raise CheckError(Failure(c.REASON_SECRET_NOT_FOUND, str(error))) from error

    def _source(self, namespace: str, spec: DriftMonitorSpec) -> Obj | None:
        """The monitored TrainingJob (its profile, and the spec a retrain clones)."""
        if spec.model.training_job is None:
            return None
        return self.kube.get_trainingjob(namespace, spec.model.training_job)

    @staticmethod
    def _reference(spec: DriftMonitorSpec, source: Obj | None,
                   store: objectstore.Storage) -> Reference:
        """What to compare with: the production pointer, when there is one, names the run."""
        at = drift_reference.pointer_uri(spec, source)
        pointer: object = None
        if at is not None:
            try:
                pointer = objectstore.read_json(at, store)
            except objectstore.ObjectNotFound:
                pointer = None  # nothing promoted yet
            except ValueError as error:  # not JSON (UnicodeDecodeError is a ValueError too)
                raise CheckError(drift_reference.invalid_pointer(at, f"not JSON ({error})")
                                 ) from error
        found = drift_reference.reference(spec, source, pointer, at)
        if isinstance(found, Failure):
            raise CheckError(found)
        return found

    @staticmethod
    def _profile(uri: str, store: objectstore.Storage) -> ReferenceProfile:
        from tailor.drift import ReferenceProfile

        try:
            return ReferenceProfile.from_json(objectstore.read_json(uri, store))
        except objectstore.ObjectNotFound as error:
            raise CheckError(Failure(c.REASON_PROFILE_NOT_FOUND, str(error))) from error

    def _retrains(self, key: Key) -> Retrains:
        return Retrains.of(self.kube.list_trainingjobs(key[0], f"{c.LABEL_DRIFTMONITOR}={key[1]}"))

    # ------------------------------------------------------------------ retraining
    def _create_retrain(self, body: Obj, spec: DriftMonitorSpec, trigger: RetrainTrigger,
                        source: Obj | None) -> bool:
        """Write the production data (if folded in), then create the TrainingJob. False when
        the data could not be written: the retrain stays recorded and a later check creates it
        (`assess.driftmonitor._recorded_but_missing`)."""
        namespace, monitor = body["metadata"]["namespace"], body["metadata"]["name"]
        retrain = retrain_trainingjob(namespace, monitor, spec, trigger, clock.now(), source)
        name = retrain["metadata"]["name"]
        try:
            retrain, note = self._fold_production_data(namespace, spec, retrain, trigger, source)
        except Exception as error:  # storage unreachable, unreadable logs
            log.warning("production data of %s/%s not written: %s", namespace, name, error)
            self.kube.event(body, "Warning", c.REASON_PRODUCTION_DATA_FAILED,
                            f"could not write the production data of retrain {name} "
                            f"({type(error).__name__}: {error}); the next check tries again")
            return False
        if self.kube.create_trainingjob(retrain) is not None:
            metrics.RETRAINS.labels(namespace, monitor, trigger.reason).inc()
            self.kube.event(body, "Normal", c.REASON_RETRAIN_CREATED,
                            f"created retraining TrainingJob {name} ({trigger.reason}): "
                            f"{trigger.message}" + (f"; {note}" if note else ""))
        return True

    def _fold_production_data(self, namespace: str, spec: DriftMonitorSpec, retrain: Obj,
                              trigger: RetrainTrigger, source: Obj | None) -> tuple[Obj, str]:
        """The retrain with the trigger window's labelled production examples written and
        named (builders.retrain says which and where), and a note for the Event."""
        plan = production_data_plan(spec, retrain, trigger)
        if not isinstance(plan, ProductionDataPlan):
            return retrain, plan or ""
        from tailor.drift import read_log_batches
        from tailor.drift.production import write_window

        store = self._storage(namespace, spec)
        profile = self._profile(self._reference(spec, source, store).profile_uri, store)
        filesystem = objectstore.filesystem(store)
        production = spec.production
        assert production.ground_truth_uri is not None
        examples = write_window(
            read_log_batches(production.predictions_uri, format=production.format,
                             filesystem=filesystem),
            read_log_batches(production.ground_truth_uri, format=production.format,
                             filesystem=filesystem),
            plan.columns(profile.features), plan.uri, filesystem,
            window_start=plan.window_start, window_end=plan.window_end)
        return with_production_data(retrain, plan, examples.rows, skipped=examples.skipped,
                                    truncated=examples.truncated)

    # ------------------------------------------------------------------ alerts
    def alert(self, body: Obj, alert: Obj) -> str:
        """Start a retrain for a firing alert about this monitor; returns the outcome."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        try:
            spec = DriftMonitorSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return "invalid-monitor"
        with self._locks[key]:
            for _ in range(3):
                fresh = self.kube.get_driftmonitor(*key)
                if fresh is None:
                    return "monitor-gone"
                decision = assess.alerted(fresh, spec, alert, self._retrains(key), clock.now())
                if decision.retrain is None:
                    return decision.outcome or "duplicate"
                source = self._source(key[0], spec)
                if spec.retrain.template is None and source is None:
                    return c.REASON_TRAININGJOB_NOT_FOUND
                try:
                    if self.kube.patch_driftmonitor_status(fresh, decision.status) is None:
                        return "monitor-gone"
                except Conflict:
                    continue
                if not self._create_retrain(fresh, spec, decision.retrain, source):
                    return "retrain-deferred"
                return "retrain-created"
        return "conflict"


def _export(key: Key, status: Obj, result: CheckResult) -> None:
    """The check's numbers as Prometheus metrics (the values status shows)."""
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
    if result.accuracy is not None and accuracy:
        metric = accuracy["metric"]
        metrics.MODEL_METRIC.labels(*key, metric).set(accuracy["value"])
        metrics.MODEL_METRIC_LOWER.labels(*key, metric).set(accuracy["lower"])
        if accuracy.get("threshold") is not None:
            metrics.MODEL_METRIC_THRESHOLD.labels(*key, metric).set(accuracy["threshold"])
