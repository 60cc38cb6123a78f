"""The chart's PrometheusRule is a rule file Prometheus accepts (`promtool check rules`), with
the default values and with every prometheusRule option set, and its retrain alert fires as the
webhook needs it (`promtool test rules`): on a metric under its threshold, after `for`, with the
namespace and monitor labels and tailor_action=retrain, and not for a healthy monitor."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import chart_rules

NONDEFAULT = chart_rules.CHART / "ci" / "nondefault-values.yaml"
OPTIONS = {
    "defaults": [],
    "nondefault": ["-f", str(NONDEFAULT)],
    "every-option": ["--set-string", "prometheusRule.for.modelMetric=0", "--set",
                     "prometheusRule.for.drift=1h30m", "--set", "prometheusRule.for.failedJobs=90s",
                     "--set", "prometheusRule.for.reconcileErrors=500ms",
                     "--set", "prometheusRule.labels.release=monitoring",
                     "--set", "fullnameOverride=ml-ops"],
}


@pytest.mark.parametrize("values", OPTIONS.values(), ids=OPTIONS.keys())
def test_promtool_accepts_the_rendered_rules(values: list[str], tmp_path: Path) -> None:
    path = chart_rules.checked_rule_file(values, tmp_path, "rules.yml")
    report = chart_rules.check_rules(path)
    assert "SUCCESS: 5 rules found" in report, report
    alerts = {r["alert"]: r for g in yaml.safe_load(path.read_text())["groups"]
              for r in g["rules"]}
    assert alerts[chart_rules.RETRAIN_ALERT]["labels"]["tailor_action"] == "retrain"


def test_a_broken_rule_is_rejected_with_promtool_s_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "X", "expr": "tailor_model_metric <", "for": "1m"}]}]}))
    with pytest.raises(chart_rules.RulesRejected, match="parse error"):
        chart_rules.check_rules(path)
    # Nothing rejected is left where Prometheus would load it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yml"]


SERIES = {"namespace": "team-a", "metric": "accuracy"}


def series(name: str, monitor: str, values: str) -> dict[str, str]:
    labels = ",".join(f'{k}="{v}"' for k, v in {**SERIES, "monitor": monitor}.items())
    return {"series": f"{name}{{{labels}}}", "values": values}


def test_the_retrain_alert_fires_after_for_with_the_labels_the_webhook_reads(
        tmp_path: Path) -> None:
    rules = chart_rules.checked_rule_file([], tmp_path, "rules.yml")  # for: 5m
    fired = {"exp_labels": {**SERIES, "monitor": "news", "alertname": chart_rules.RETRAIN_ALERT,
                            "severity": "warning", "tailor_action": "retrain"},
             "exp_annotations": {
                 "summary": "news: accuracy is below its threshold",
                 "description": "DriftMonitor team-a/news measures accuracy = 0.600 in "
                                "production, under the threshold set in spec.checks.accuracy."}}
    tests = {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        # news falls under its threshold at minute 2; calm stays above its own.
        "input_series": [series("tailor_model_metric", "news", "0.9 0.9 0.6x10"),
                         series("tailor_model_metric_threshold", "news", "0.8x12"),
                         series("tailor_model_metric", "calm", "0.95x12"),
                         series("tailor_model_metric_threshold", "calm", "0.8x12")],
        "alert_rule_test": [
            {"eval_time": "6m", "alertname": chart_rules.RETRAIN_ALERT, "exp_alerts": []},
            {"eval_time": "8m", "alertname": chart_rules.RETRAIN_ALERT, "exp_alerts": [fired]},
        ]}]}
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([str(chart_rules.promtool_path()), "test", "rules", spec.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"
