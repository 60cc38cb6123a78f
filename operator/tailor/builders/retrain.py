"""The retraining TrainingJob a DriftMonitor creates, and the plan of its production data.

Pure functions of the parsed spec and the trigger; the controller writes the data and creates
the object. The retrain is the template, or a clone of the monitored job's spec, for the same
model (so its promotion gate compares the candidate with the current production model), named
after its trigger (so a retried or restarted operator creates the same object) and carrying the
trigger as lineage (labels and the ``tailor.dev/trigger`` annotation).

With ``retrain.includeProductionData``, the trigger window's labelled production examples are
written to one object per retrain, ``<output>/<model>/production-data/<retrain>.parquet``, and
named in the retrain's ``spec.data.productionUris``: production data, which the trainer never
puts in the locked test set and whose most recent rows it holds out to judge the retrain where
production is now. Its columns: the retrain's id and label columns (from the log's id and the
ground truth's label), its timestamp column (``data.columns.timestamp``: the prediction's time,
which orders the rows for that holdout), its text or image column, its group column and the
reference profile's features, each copied from the prediction log under the same name.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tailor_contract import clock, names
from tailor_contract import constants as c
from tailor_contract.common import parse_duration
from tailor_contract.driftmonitor import DriftMonitorSpec, RetrainTrigger, annotation_text
from tailor_contract.trainingjob import MAX_PRODUCTION_URIS, TrainingJobSpec

if TYPE_CHECKING:
    from tailor.drift.production import ProductionColumns

Obj = dict[str, Any]


def retrain_trainingjob(namespace: str, monitor: str, spec: DriftMonitorSpec,
                        trigger: RetrainTrigger, now: datetime.datetime,
                        source: Obj | None = None) -> Obj:
    """The retraining TrainingJob for `trigger`. `source` is the monitored TrainingJob, whose
    spec is cloned when the monitor has no ``retrain.template``."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    template = spec.retrain.template
    if template is not None:
        job_spec = template.spec.model_dump(by_alias=True, exclude_none=True)
        if template.metadata is not None:
            labels |= template.metadata.labels or {}
            annotations |= template.metadata.annotations or {}
        model_name = template.spec.model_name(spec.model.training_job or monitor)
    else:
        if source is None or spec.model.training_job is None:
            raise ValueError("a retrain without a template clones the monitored TrainingJob")
        job_spec = copy.deepcopy(source["spec"])
        model_name = TrainingJobSpec.model_validate(job_spec).model_name(
            spec.model.training_job)
    if job_spec.get("task") != "custom":
        job_spec.setdefault("model", {})["name"] = model_name
    labels |= {c.LABEL_DRIFTMONITOR: monitor, c.LABEL_MODEL: model_name}
    annotations[c.ANNOTATION_TRIGGER] = annotation_text(
        trigger.annotation(monitor, clock.format(now)))
    return {"apiVersion": c.API_VERSION, "kind": c.TRAININGJOB_KIND,
            "metadata": {"name": names.retrain_job_name(monitor, trigger.identity),
                         "namespace": namespace, "labels": labels,
                         "annotations": annotations},
            "spec": job_spec}


@dataclass(frozen=True)
class ProductionDataPlan:
    """Where a retrain's production data goes, from which window, with which columns."""

    uri: str
    window_start: datetime.datetime
    window_end: datetime.datetime
    log_id: str
    log_timestamp: str
    log_label: str
    id: str
    """The retrain's data.columns.id (the log's id is copied into it)."""
    label: str
    """The retrain's data.columns.label (the ground truth's label is copied into it)."""
    model_inputs: tuple[str, ...]
    """The retrain's text or image column and its group column."""
    required: tuple[str, ...]
    """Inputs a row cannot be trained on without (the text or image column)."""
    present: tuple[str, ...]
    """The retrain's productionUris before the production data is added."""
    timestamp: str = "timestamp"
    """The retrain's data.columns.timestamp (the prediction's time is copied into it)."""

    def columns(self, features: Iterable[str]) -> ProductionColumns:
        """The columns to write: the model's inputs, then the profile's `features`."""
        from tailor.drift.production import ProductionColumns

        return ProductionColumns(
            log_id=self.log_id, log_timestamp=self.log_timestamp, log_label=self.log_label,
            id=self.id, label=self.label,
            inputs=tuple(dict.fromkeys([*self.model_inputs, *features])),
            required=self.required, timestamp=self.timestamp)


def production_data_plan(spec: DriftMonitorSpec, retrain: Obj, trigger: RetrainTrigger
                         ) -> ProductionDataPlan | str | None:
    """The plan of `retrain`'s production data; None when none is folded in, a note for the
    Event when it cannot be.

    Applies when retrain.includeProductionData is on, the monitor has ground truth, the trigger
    has a window and the retrain trains on data with an output (not a custom job without them).
    """
    job_spec = retrain["spec"]
    if not (spec.retrain.include_production_data and spec.production.ground_truth_uri
            and trigger.window_end and job_spec.get("data") and job_spec.get("output")):
        return None
    parsed = TrainingJobSpec.model_validate(job_spec)
    assert parsed.data is not None and parsed.output is not None
    present = tuple(parsed.data.production_uris or ())
    meta = retrain["metadata"]
    uri = names.production_data_uri(parsed.output.uri, meta["labels"][c.LABEL_MODEL],
                                    meta["name"])
    if uri not in present and len(present) >= MAX_PRODUCTION_URIS:
        return (f"production data not folded in: the template already names "
                f"{MAX_PRODUCTION_URIS} production URIs")
    end = clock.parse(trigger.window_end)
    start = clock.parse(trigger.window_start) if trigger.window_start else \
        end - parse_duration(spec.production.window)
    data_columns, log_columns = parsed.data.columns, spec.production.columns
    model_input = data_columns.text or data_columns.image
    return ProductionDataPlan(
        uri=uri, window_start=start, window_end=end, log_id=log_columns.id,
        log_timestamp=log_columns.timestamp, log_label=log_columns.label, id=data_columns.id,
        label=data_columns.label,
        model_inputs=tuple(col for col in (model_input, data_columns.group) if col),
        required=(model_input,) if model_input else (), present=present,
        timestamp=data_columns.timestamp)


def with_production_data(retrain: Obj, plan: ProductionDataPlan, rows: int, *,
                         skipped: int = 0, truncated: bool = False) -> tuple[Obj, str]:
    """The retrain naming the `rows` written in its data.productionUris (none: nothing to
    name), their URI and count in its lineage annotation; and a note for the RetrainCreated
    Event. Naming is idempotent: the same plan twice names the object once."""
    out = copy.deepcopy(retrain)
    lineage: dict[str, Any] = {"rows": rows}
    if rows:
        lineage["uri"] = plan.uri
        data = out["spec"]["data"]
        data["productionUris"] = [*(u for u in plan.present if u != plan.uri), plan.uri]
        # Production data is never read as additional (curated) data as well.
        additional = [u for u in data.get("additionalUris") or () if u != plan.uri]
        if additional:
            data["additionalUris"] = additional
        else:
            data.pop("additionalUris", None)
    if truncated:
        lineage["truncated"] = True
    annotations = out["metadata"]["annotations"]
    document = json.loads(annotations[c.ANNOTATION_TRIGGER])
    document["productionData"] = lineage
    annotations[c.ANNOTATION_TRIGGER] = annotation_text(document)
    if not rows:
        return out, "no labelled production examples in the window to fold in"
    return out, (f"folded in {rows} labelled production examples ({plan.uri})"
                 + (f", {skipped} left out" if skipped else ""))
