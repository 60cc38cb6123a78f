"""The plan of a retrain's production data (builders.retrain), pure: the object goes into the
retrain's data.productionUris, never additionalUris, with the retrain's timestamp column."""

from __future__ import annotations

import datetime
import json
from typing import Any

from tailor.builders.retrain import (
    ProductionDataPlan,
    production_data_plan,
    retrain_trainingjob,
    with_production_data,
)
from tailor_contract.driftmonitor import DriftMonitorSpec, RetrainTrigger
from tailor_contract.trainingjob import MAX_PRODUCTION_URIS, TrainingJobSpec

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
TRIGGER = RetrainTrigger("AccuracyBelowThreshold", "u:w:AccuracyBelowThreshold", "low",
                         "2030-01-01T11:00:00Z", "2030-01-01T12:00:00Z")


def retrain(**data: Any) -> tuple[DriftMonitorSpec, dict[str, Any]]:
    job = {"task": "text-classification", "model": {"name": "news", "base": "s3://bkt/base/"},
           "data": {"uri": "s3://bkt/data/curated.csv", "columns": {"text": "body"}, **data},
           "output": {"uri": "s3://bkt/models"}}
    spec = DriftMonitorSpec.model_validate({
        "model": {"profileUri": "s3://bkt/profile.json"},
        "production": {"predictionsUri": "s3://bkt/logs/", "groundTruthUri": "s3://bkt/labels/",
                       "window": "1h", "columns": {"timestamp": "ts"}},
        "retrain": {"template": {"spec": job}}})
    return spec, retrain_trainingjob("ns", "m", spec, TRIGGER, NOW)


def test_the_plan_writes_the_retrains_timestamp_column_from_the_logs_timestamp() -> None:
    spec, job = retrain(columns={"text": "body", "timestamp": "predicted_at"})
    plan = production_data_plan(spec, job, TRIGGER)
    assert isinstance(plan, ProductionDataPlan)
    assert (plan.log_timestamp, plan.timestamp) == ("ts", "predicted_at")
    columns = plan.columns(["length", "predicted_at"])
    assert columns.timestamp == "predicted_at"
    # The timestamp comes from the log's time, once, even if the profile has such a feature.
    assert columns.output_names() == ["id", "body", "length", "predicted_at", "label"]
    spec, job = retrain()
    default = production_data_plan(spec, job, TRIGGER)
    assert isinstance(default, ProductionDataPlan) and default.timestamp == "timestamp"


def test_the_object_is_named_in_production_uris_once_and_never_as_additional_data() -> None:
    curated = "s3://bkt/data/more.csv"
    earlier = "s3://bkt/models/news/production-data/m-retrain-0.parquet"
    spec, job = retrain(additionalUris=[curated], productionUris=[earlier])
    plan = production_data_plan(spec, job, TRIGGER)
    assert isinstance(plan, ProductionDataPlan)
    named, note = with_production_data(job, plan, 40, skipped=2)
    data = named["spec"]["data"]
    assert data["productionUris"] == [earlier, plan.uri]
    assert data["additionalUris"] == [curated]
    assert note == f"folded in 40 labelled production examples ({plan.uri}), 2 left out"
    lineage = json.loads(named["metadata"]["annotations"]["tailor.dev/trigger"])
    assert lineage["productionData"] == {"rows": 40, "uri": plan.uri}
    TrainingJobSpec.model_validate(named["spec"])  # what the API server will be given
    # The same plan again (a restart): the same object, named once.
    again, _ = with_production_data(named, plan, 40)
    assert again["spec"]["data"]["productionUris"] == [earlier, plan.uri]
    # A template that listed it as additional data (before productionUris existed): moved.
    old = json.loads(json.dumps(job))
    old["spec"]["data"] = {**old["spec"]["data"], "additionalUris": [plan.uri],
                           "productionUris": [earlier]}
    moved, _ = with_production_data(old, plan, 40)
    assert "additionalUris" not in moved["spec"]["data"]
    assert moved["spec"]["data"]["productionUris"] == [earlier, plan.uri]


def test_no_rows_names_nothing_and_a_full_list_is_not_extended() -> None:
    spec, job = retrain()
    plan = production_data_plan(spec, job, TRIGGER)
    assert isinstance(plan, ProductionDataPlan)
    empty, note = with_production_data(job, plan, 0)
    assert "productionUris" not in empty["spec"]["data"]
    assert note == "no labelled production examples in the window to fold in"
    full = [f"s3://bkt/p/{i}.parquet" for i in range(MAX_PRODUCTION_URIS)]
    spec, job = retrain(productionUris=full)
    assert production_data_plan(spec, job, TRIGGER) == (
        f"production data not folded in: the template already names {MAX_PRODUCTION_URIS} "
        f"production URIs")
