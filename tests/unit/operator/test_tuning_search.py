"""The search phase of a tuned TrainingJob (`tailor.assess.tuning`) as a pure function, with
the study replayed from status each time (`tailor.assess.search`)."""

from __future__ import annotations

import copy
import json
from typing import Any

from tailor.assess.search import Search
from tailor.assess.trainingjob import assess
from tailor.assess.tuning import Observed
from tailor.builders.trainingjob import JobRef
from tailor.builders.tuning import build_final_run, build_trial
from tailor_contract import constants as c
from tailor_contract import trainer_api
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec

NOW = "2026-01-01T00:01:00Z"
RAW: dict[str, Any] = {
    "task": "text-classification",
    "model": {"base": "s3://models/minilm"},
    "data": {"uri": "s3://data/news.csv", "columns": {"text": "text"}},
    "output": {"uri": "s3://out"},
    "hyperparameters": {"epochs": 3, "learningRate": 5e-5, "batchSize": 32, "seed": 7},
    "runPolicy": {"backoffLimit": 1},
    "tuning": {"maxTrials": 4, "parallelTrials": 2,
               "earlyStopping": {"algorithm": "median", "minEpochs": 1},
               "searchSpace": {"learningRate": {"min": 1e-5, "max": 1e-2, "scale": "log"},
                               "batchSize": {"values": [16, 32]}}},
}


def spec_of(**tuning: Any) -> TrainingJobSpec:
    raw = copy.deepcopy(RAW)
    raw["tuning"].update(tuning)
    return TrainingJobSpec.model_validate(raw)


SPEC = spec_of()


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "abcdef0123", "generation": 1,
                         "resourceVersion": "1"}, "status": status or {}}


def trial_job(number: int, attempt: int = 0, condition: str | None = None,
              reason: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"active": 1}
    if condition is not None:
        status = {"conditions": [{"type": condition, "status": "True", "reason": reason}]}
    return {"metadata": {"name": f"j-t{number}", "uid": f"uid-{number}-{attempt}",
                         "labels": {c.LABEL_TRIAL: str(number)},
                         "annotations": {"tailor.dev/attempt": str(attempt)}},
            "spec": {}, "status": status}


def pod(code: int, summary: TerminationSummary) -> dict[str, Any]:
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": "0"}},
            "status": {"containerStatuses": [{"state": {"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "message": summary.to_message(), "finishedAt": NOW}}}]}}


def succeeded(number: int, value: float) -> dict[str, Any]:
    curve = [[1, value - 0.1], [2, value]]
    return pod(0, TerminationSummary("Succeeded", trial={"number": number, "value": value,
                                                         "bestEpoch": 2, "curve": curve}))


def step(status: dict[str, Any], seen: Observed | None = None, spec: TrainingJobSpec = SPEC,
         **kwargs: Any) -> Any:
    return assess(body(status), spec, None, None, NOW, trials=seen or Observed(), **kwargs)


def finish_all(spec: TrainingJobSpec, values: dict[int, float]) -> dict[str, Any]:
    """Run a search to its end: every trial asked completes with values[number]."""
    status: dict[str, Any] = step({}, spec=spec).status
    for _ in range(20):
        running = [t["number"] for t in status["tuning"]["trials"]
                   if t["state"] == c.TRIAL_RUNNING]
        if not running:
            return status
        seen = Observed(jobs={n: trial_job(n, condition="Complete") for n in running},
                        pods={n: [succeeded(n, values[n])] for n in running})
        status = step(status, seen, spec=spec).status
    raise AssertionError("the search never ended")


def test_a_new_search_records_its_first_trials_before_creating_them() -> None:
    decision = step({})
    tuning = decision.status["tuning"]
    assert decision.status["phase"] == "Tuning" and decision.action == "none"
    assert [t["number"] for t in tuning["trials"]] == [0, 1]
    assert [s.number for s in decision.trial_starts] == [0, 1]
    for trial, start in zip(tuning["trials"], decision.trial_starts, strict=True):
        assert trial["state"] == c.TRIAL_RUNNING and trial["attempts"] == 1
        assert start.parameters == trial["parameters"] and start.attempt == 0
        assert 1e-5 <= trial["parameters"]["learningRate"] <= 1e-2
        assert trial["parameters"]["batchSize"] in (16, 32)
        assert isinstance(trial["parameters"]["batchSize"], int)
    assert [e.reason for e in decision.events].count(c.REASON_TRIAL_STARTED) == 2
    assert tuning["summary"] == "0/4 trials"


def test_the_replayed_study_decides_the_same_and_repeats_no_trial() -> None:
    """Nothing lives in memory: the same status gives the same decision (an operator
    restart changes nothing), and a trial recorded but not yet created is created, not
    asked again."""
    first = step({})
    again = step({})
    assert first.status["tuning"] == again.status["tuning"]
    # The groups were never created (a crash after the status patch): recreate, ask nothing.
    resumed = step(first.status)
    assert [s.number for s in resumed.trial_starts] == [0, 1]
    assert len(resumed.status["tuning"]["trials"]) == 2
    assert [s.parameters for s in resumed.trial_starts] == \
        [t["parameters"] for t in first.status["tuning"]["trials"]]


def test_a_completed_trial_is_recorded_and_the_next_one_asked() -> None:
    status = step({}).status
    seen = Observed(jobs={0: trial_job(0, condition="Complete"), 1: trial_job(1)},
                    pods={0: [succeeded(0, 0.8)]})
    decision = step(status, seen)
    trials = decision.status["tuning"]["trials"]
    assert trials[0]["state"] == c.TRIAL_COMPLETED and trials[0]["value"] == 0.8
    assert trials[0]["curve"] == [{"epoch": 1, "value": 0.7000000000000001},
                                  {"epoch": 2, "value": 0.8}]
    assert [s.number for s in decision.trial_starts] == [2]
    assert decision.status["tuning"]["bestTrial"]["number"] == 0
    assert decision.status["tuning"]["trialsCompleted"] == 1
    assert c.REASON_TRIAL_COMPLETED in [e.reason for e in decision.events]


def test_distinct_trials_get_distinct_parameters_over_many_seeds() -> None:
    """TPE's constant liar and the per-ask seed: asks in one step differ (a rate over seeds)."""
    repeats = 0
    for seed in range(40):
        spec = spec_of(seed=seed)
        trials = step({}, spec=spec).status["tuning"]["trials"]
        repeats += trials[0]["parameters"] == trials[1]["parameters"]
    assert repeats == 0


def test_the_search_completes_with_the_best_trial_and_the_final_run_starts() -> None:
    status = finish_all(SPEC, {0: 0.7, 1: 0.9, 2: 0.8, 3: 0.6})
    tuning = status["tuning"]
    assert tuning["state"] == c.SEARCH_COMPLETED and tuning["trialsCompleted"] == 4
    assert tuning["bestTrial"]["number"] == 1 and tuning["bestTrial"]["value"] == 0.9
    assert status["phase"] == "Pending"  # the final run's worker group was created
    final = step(status)  # the search is done: the ordinary lifecycle goes on
    assert final.action == "create" and not final.trial_starts


def test_the_final_run_trains_with_the_best_parameters_and_is_told_the_search() -> None:
    status = finish_all(SPEC, {0: 0.7, 1: 0.9, 2: 0.8, 3: 0.6})
    best = status["tuning"]["bestTrial"]["parameters"]
    from tailor.assess.tuning import summary_for_final_run

    job = build_final_run(SPEC, RAW, JobRef("j", "ns", "abcdef0123"), best=best,
                          search=summary_for_final_run(SPEC, status["tuning"]), image="img",
                          attempt=0, deadline_seconds=None)
    env = {e["name"]: e.get("value") for e in
           job["spec"]["template"]["spec"]["containers"][0]["env"]}
    handed = json.loads(env[trainer_api.ENV_TRAININGJOB])["spec"]["hyperparameters"]
    assert handed["learningRate"] == best["learningRate"]
    assert handed["batchSize"] == best["batchSize"] and handed["epochs"] == 3
    search = json.loads(env[trainer_api.ENV_SEARCH])
    assert search["best"]["number"] == 1 and len(search["trials"]) == 4
    assert trainer_api.ENV_TRIAL not in env and job["metadata"]["name"] == "j-worker"


def test_a_trial_group_is_its_own_worker_group_in_trial_mode() -> None:
    service, job = build_trial(SPEC, RAW, JobRef("j", "ns", "abcdef0123"), number=3,
                               parameters={"learningRate": 0.001, "batchSize": 16.0},
                               image="img", attempt=1, deadline_seconds=None)
    assert job["metadata"]["name"] == service["metadata"]["name"] == "j-t3"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels == {c.LABEL_TRAININGJOB: "j", c.LABEL_COMPONENT: c.COMPONENT_TRIAL,
                      c.LABEL_TRIAL: "3"} == service["spec"]["selector"]
    env = {e["name"]: e.get("value") for e in
           job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[trainer_api.ENV_RUN_ID] == "run-abcdef01-trial-3"
    assert env[trainer_api.ENV_ARTIFACT_URI] == "s3://out/j/runs/run-abcdef01/trials/3/"
    assert env[trainer_api.ENV_MODEL_URI] == "s3://out/j/"
    assert json.loads(env[trainer_api.ENV_TRIAL]) == {
        "number": 3, "metric": "accuracy", "direction": "maximize",
        "searchRunId": "run-abcdef01"}
    hp = json.loads(env[trainer_api.ENV_TRAININGJOB])["spec"]["hyperparameters"]
    assert hp["batchSize"] == 16 and isinstance(hp["batchSize"], int)
    assert env["PET_MASTER_ADDR"] == "j-t3-0.j-t3.ns.svc.cluster.local"
    assert env[trainer_api.ENV_RESTART_COUNT] == "1"


def test_a_retryable_failure_restarts_the_trial_with_the_same_parameters() -> None:
    status = step({}).status
    crashed = pod(137, TerminationSummary("Failed", reason="Crashed"))
    seen = Observed(jobs={0: trial_job(0, condition="Failed"), 1: trial_job(1)},
                    pods={0: [crashed]})
    decision = step(status, seen)
    trial = decision.status["tuning"]["trials"][0]
    assert trial["state"] == c.TRIAL_PENDING and trial["attempts"] == 2
    assert [j["metadata"]["name"] for j in decision.trial_deletes] == ["j-t0"]
    assert not decision.trial_starts  # no new trial while trial 0 waits for its restart
    # Once the old group is gone, the trial starts again: same number, attempt 1.
    restarted = step(decision.status, Observed(jobs={1: trial_job(1)}))
    assert [(s.number, s.attempt) for s in restarted.trial_starts] == [(0, 1)]
    assert restarted.trial_starts[0].parameters == trial["parameters"]
    assert c.REASON_TRIAL_RESTARTED in [e.reason for e in restarted.events]


def test_a_trial_whose_loss_is_not_finite_fails_and_the_search_goes_on() -> None:
    status = step({}).status
    nan = pod(trainer_api.EXIT_PERMANENT, TerminationSummary(
        "Failed", reason=c.REASON_NON_FINITE_LOSS, message="loss nan at step 3",
        permanent=True))
    seen = Observed(jobs={0: trial_job(0, condition="Failed"), 1: trial_job(1)},
                    pods={0: [nan]})
    decision = step(status, seen)
    trial = decision.status["tuning"]["trials"][0]
    assert trial["state"] == c.TRIAL_FAILED and trial["reason"] == c.REASON_NON_FINITE_LOSS
    assert "loss nan" in trial["message"]
    assert decision.status["phase"] == "Tuning" and decision.status["tuning"]["trialsFailed"] == 1
    assert [s.number for s in decision.trial_starts] == [2]
    assert c.REASON_TRIAL_FAILED in [e.reason for e in decision.events]


def test_bad_data_fails_the_whole_job_and_stops_every_trial() -> None:
    status = step({}).status
    gate = pod(trainer_api.EXIT_PERMANENT, TerminationSummary(
        "Failed", reason=c.REASON_DATA_QUALITY_FAILED, message="2 empty texts", permanent=True))
    other = trial_job(1)
    decision = step(status, Observed(jobs={0: trial_job(0, condition="Failed"), 1: other},
                                     pods={0: [gate]}))
    s = decision.status
    assert s["phase"] == "Failed" and s["tuning"]["state"] == c.SEARCH_FAILED
    failed = next(x for x in s["conditions"] if x["type"] == c.CONDITION_FAILED)
    assert failed["reason"] == c.REASON_DATA_QUALITY_FAILED and "2 empty texts" in \
        failed["message"]
    assert other in decision.trial_deletes and not decision.trial_starts


def test_more_failed_trials_than_allowed_fail_the_job() -> None:
    spec = spec_of(maxFailedTrials=0)
    status = step({}, spec=spec).status
    nan = pod(trainer_api.EXIT_PERMANENT, TerminationSummary(
        "Failed", reason=c.REASON_NON_FINITE_LOSS, permanent=True))
    decision = step(status, Observed(jobs={0: trial_job(0, condition="Failed"),
                                           1: trial_job(1)}, pods={0: [nan]}), spec=spec)
    failed = next(x for x in decision.status["conditions"] if x["type"] == c.CONDITION_FAILED)
    assert failed["status"] == "True" and failed["reason"] == c.REASON_TOO_MANY_FAILED_TRIALS


def test_a_search_where_no_trial_completes_fails_with_no_successful_trial() -> None:
    spec = spec_of(maxTrials=2)
    status = step({}, spec=spec).status
    nan = pod(trainer_api.EXIT_PERMANENT, TerminationSummary(
        "Failed", reason=c.REASON_NON_FINITE_LOSS, permanent=True))
    decision = step(status, Observed(jobs={n: trial_job(n, condition="Failed") for n in (0, 1)},
                                     pods={0: [nan], 1: [nan]}), spec=spec)
    failed = next(x for x in decision.status["conditions"] if x["type"] == c.CONDITION_FAILED)
    assert failed["reason"] == c.REASON_NO_SUCCESSFUL_TRIAL


def test_a_trial_far_below_the_median_is_pruned_and_its_group_stopped() -> None:
    status = step({}).status
    status = step(status, Observed(jobs={0: trial_job(0, condition="Complete"), 1: trial_job(1)},
                                   pods={0: [succeeded(0, 0.9)]})).status
    job = trial_job(1)
    decision = step(status, Observed(jobs={1: job, 2: trial_job(2)},
                                     curves={1: [{"epoch": 1, "value": 0.2}]}))
    trial = decision.status["tuning"]["trials"][1]
    assert trial["state"] == c.TRIAL_PRUNED and trial["value"] == 0.2
    assert trial["curve"] == [{"epoch": 1, "value": 0.2}]
    assert job in decision.trial_deletes
    assert decision.status["tuning"]["trialsPruned"] == 1
    assert [s.number for s in decision.trial_starts] == [3]


def test_a_trial_above_the_median_is_not_pruned_and_min_epochs_is_respected() -> None:
    status = step({}).status
    status = step(status, Observed(jobs={0: trial_job(0, condition="Complete"), 1: trial_job(1)},
                                   pods={0: [succeeded(0, 0.5)]})).status
    good = step(status, Observed(jobs={1: trial_job(1), 2: trial_job(2)},
                                 curves={1: [{"epoch": 1, "value": 0.6}]}))
    assert good.status["tuning"]["trials"][1]["state"] == c.TRIAL_RUNNING
    patient = spec_of(earlyStopping={"algorithm": "median", "minEpochs": 2})
    status = step({}, spec=patient).status
    status = step(status, Observed(jobs={0: trial_job(0, condition="Complete"), 1: trial_job(1)},
                                   pods={0: [succeeded(0, 0.9)]}), spec=patient).status
    early = step(status, Observed(jobs={1: trial_job(1), 2: trial_job(2)},
                                  curves={1: [{"epoch": 1, "value": 0.1}]}), spec=patient)
    assert early.status["tuning"]["trials"][1]["state"] == c.TRIAL_RUNNING


def test_suspend_stops_the_trials_and_resume_restarts_the_same_ones() -> None:
    status = step({}).status
    suspended_spec = TrainingJobSpec.model_validate({**RAW, "runPolicy": {"suspend": True}})
    jobs = {0: trial_job(0), 1: trial_job(1)}
    paused = step(status, Observed(jobs=jobs), spec=suspended_spec)
    assert paused.status["phase"] == "Suspended" and not paused.trial_starts
    assert sorted(j["metadata"]["name"] for j in paused.trial_deletes) == ["j-t0", "j-t1"]
    assert {t["state"] for t in paused.status["tuning"]["trials"]} == {c.TRIAL_PENDING}
    resumed = step(paused.status)
    assert [(s.number, s.attempt) for s in resumed.trial_starts] == [(0, 0), (1, 0)]
    assert len(resumed.status["tuning"]["trials"]) == 2


def test_grid_search_tries_every_point_once_and_stops_at_the_grid() -> None:
    spec = spec_of(algorithm="grid", maxTrials=6, earlyStopping=None,
                   searchSpace={"learningRate": {"values": [1e-4, 1e-3]},
                                "epochs": {"min": 1, "max": 2}})
    status = finish_all(spec, dict.fromkeys(range(6), 0.5))
    trials = status["tuning"]["trials"]
    points = [(t["parameters"]["learningRate"], t["parameters"]["epochs"]) for t in trials]
    assert sorted(points) == [(1e-4, 1), (1e-4, 2), (1e-3, 1), (1e-3, 2)]
    assert status["tuning"]["state"] == c.SEARCH_COMPLETED
    assert status["tuning"]["summary"].startswith("4/4 trials")


def test_the_replayed_study_holds_every_persisted_trial_with_its_curve() -> None:
    trials = [{"number": 0, "parameters": {"learningRate": 1e-3, "batchSize": 16},
               "state": c.TRIAL_COMPLETED, "value": 0.8,
               "curve": [{"epoch": 1, "value": 0.7}, {"epoch": 2, "value": 0.8}]},
              {"number": 1, "parameters": {"learningRate": 1e-4, "batchSize": 32},
               "state": c.TRIAL_RUNNING, "curve": [{"epoch": 1, "value": 0.5}]}]
    assert SPEC.tuning is not None
    search = Search(SPEC.tuning, trials, name="x", default_seed=1, max_epochs=3)
    replayed = search.study.trials
    assert [t.number for t in replayed] == [0, 1] and replayed[0].value == 0.8
    assert replayed[1].intermediate_values == {1: 0.5}
    assert search.ask() not in [t["parameters"] for t in trials]


def report(status: dict[str, Any], spec: TrainingJobSpec, number: int,
           values: list[float]) -> dict[str, Any]:
    """Trial `number` reports its curve epoch by epoch (as the scraper would see it grow)."""
    curve: list[dict[str, Any]] = []
    for epoch, value in enumerate(values, 1):
        curve = [*curve, {"epoch": epoch, "value": value}]
        status = step(status, Observed(jobs={number: trial_job(number)},
                                       curves={number: curve}), spec=spec).status
    return status


def test_hyperband_prunes_a_poor_trial_by_the_rungs_replayed_from_status() -> None:
    """Hyperband (1 to 3 epochs) keeps each trial's value at each rung; persisted with the
    trial (`pruner`) and replayed, it stops a trial far below the others at epoch 1 in most
    brackets (a rate over seeds), and never one far above them."""
    pruned = {"poor": 0, "good": 0}
    for seed in range(20):
        spec = spec_of(seed=seed, maxTrials=8,
                       earlyStopping={"algorithm": "hyperband", "minEpochs": 1})
        status = step({}, spec=spec).status
        for number in (0, 1):
            status = report(status, spec, number, [0.6 + number / 100, 0.7, 0.8])
            assert status["tuning"]["trials"][number].get("pruner")
            status = step(status, Observed(jobs={number: trial_job(number, condition="Complete")},
                                           pods={number: [succeeded(number, 0.8)]}),
                          spec=spec).status
        for kind, value in (("poor", 0.05), ("good", 0.99)):
            after = report(status, spec, 2, [value])
            pruned[kind] += after["tuning"]["trials"][2]["state"] == c.TRIAL_PRUNED
    assert pruned["good"] == 0 and pruned["poor"] >= 12, pruned


def test_trial_metrics_count_ends_and_follow_the_best() -> None:
    from prometheus_client import REGISTRY
    from tailor.controllers import trials

    status = step({}).status
    after = step(status, Observed(jobs={0: trial_job(0, condition="Complete"), 1: trial_job(1)},
                                  pods={0: [succeeded(0, 0.8)]})).status
    before = REGISTRY.get_sample_value("tailor_tuning_trials_total",
                                       {"namespace": "m", "state": "Completed"}) or 0
    trials.record("m", "j", status, after)
    trials.record("m", "j", after, after)  # the same step seen twice counts once
    assert REGISTRY.get_sample_value("tailor_tuning_trials_total",
                                     {"namespace": "m", "state": "Completed"}) == before + 1
    labels = {"namespace": "m", "trainingjob": "j"}
    assert REGISTRY.get_sample_value("tailor_tuning_best_objective",
                                     {**labels, "metric": "accuracy"}) == 0.8
    assert REGISTRY.get_sample_value("tailor_tuning_trials_running", labels) == 2
    trials.forget("m", "j")
    assert REGISTRY.get_sample_value("tailor_tuning_trials_running", labels) is None


def test_no_point_is_tried_twice_and_a_used_up_space_ends_the_search() -> None:
    """Two possible points, four trials allowed: the search tries each point once and ends,
    rather than spend two trials training points it already has."""
    spec = spec_of(maxTrials=4, parallelTrials=1, earlyStopping=None,
                   searchSpace={"batchSize": {"values": [16, 32]}})
    status = finish_all(spec, {0: 0.7, 1: 0.8})
    trials = status["tuning"]["trials"]
    assert sorted(t["parameters"]["batchSize"] for t in trials) == [16, 32]
    assert status["tuning"]["state"] == c.SEARCH_COMPLETED
    assert status["tuning"]["summary"].startswith("2/2 trials")


def test_a_trial_that_reached_its_last_epoch_is_not_pruned() -> None:
    """The scrape may see a trial's last epoch before its Job completes: it ends Completed,
    whatever the pruner would say (it trained all it was going to)."""
    status = step({}).status
    status = step(status, Observed(jobs={0: trial_job(0, condition="Complete"), 1: trial_job(1)},
                                   pods={0: [succeeded(0, 0.9)]})).status
    last = [{"epoch": e, "value": 0.1} for e in (1, 2, 3)]  # hyperparameters.epochs is 3
    decision = step(status, Observed(jobs={1: trial_job(1), 2: trial_job(2)}, curves={1: last}))
    assert decision.status["tuning"]["trials"][1]["state"] == c.TRIAL_RUNNING
