"""The chart's alerting, as the local stack's Prometheus and Alertmanager run it.

`helm template` renders the chart's PrometheusRule (helm/tailor/templates/prometheusrule.yaml);
its `spec.groups` is a Prometheus rule file, which `promtool check rules` must accept before the
stack's Prometheus loads it from `<stack>/prometheus/rules/`. The Prometheus Operator does the
same in a cluster, so the rule the tests and the demo fire is the rule users install.
`route_matchers` gives the chart's AlertmanagerConfig route as receiver-fragment matchers.

Helm comes from `make chart-tools`, promtool from Debian's `prometheus` package (`make prereqs`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from tailor_devstack import services
from tailor_devstack.state import REPO_ROOT

CHART = REPO_ROOT / "helm" / "tailor"
RETRAIN_ALERT = "TailorModelMetricBelowThreshold"
MATCH_TYPES = ("=", "!=", "=~", "!~")


class RulesRejected(AssertionError):
    """promtool refused the rendered rules: the chart's PrometheusRule is broken."""


def helm_path() -> Path:
    """The pinned Helm hack/build-binaries.sh builds (hack/versions.sh names the version)."""
    out = subprocess.run(["bash", "-c", f'source "{REPO_ROOT}/hack/versions.sh" && '
                          'echo "$TAILOR_BIN_ROOT/helm-$HELM_VERSION/helm"'],
                         check=True, capture_output=True, text=True).stdout.strip()
    if not os.access(out, os.X_OK):
        raise FileNotFoundError(f"helm is not built ({out}): run `make chart-tools`")
    return Path(out)


def promtool_path() -> Path:
    found = shutil.which("promtool")
    if found is None:
        raise FileNotFoundError("promtool is missing: run `make prereqs` (Debian package "
                                "prometheus ships it as /usr/bin/promtool)")
    return Path(found)


def render(template: str, values: Sequence[str], *, release: str, namespace: str
           ) -> dict[str, Any]:
    """One chart template rendered with `values` (helm arguments: --set x=y, -f file)."""
    result = subprocess.run(
        [str(helm_path()), "template", release, str(CHART), "-n", namespace,
         "--show-only", f"templates/{template}", *values],
        capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"helm template {template} {' '.join(values)} failed:\n"
                             f"{result.stderr}")
    doc: dict[str, Any] = yaml.safe_load(result.stdout)
    return doc


def rule_groups(values: Sequence[str] = (), *, release: str = "tailor",
                namespace: str = "tailor-system") -> dict[str, Any]:
    """The chart's PrometheusRule (enabled whatever `values` say) as a Prometheus rule file."""
    rule = render("prometheusrule.yaml", ["--set", "prometheusRule.enabled=true", *values],
                  release=release, namespace=namespace)
    assert rule["kind"] == "PrometheusRule", rule
    return {"groups": rule["spec"]["groups"]}


def check_rules(path: Path) -> str:
    """`promtool check rules` on a rule file: its report, or RulesRejected with it."""
    result = subprocess.run([str(promtool_path()), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    report = f"{result.stdout}{result.stderr}"
    if result.returncode != 0:
        raise RulesRejected(f"promtool check rules rejected the chart's rules ({path}):\n"
                            f"{report}")
    return report


def checked_rule_file(values: Sequence[str], directory: Path, name: str) -> Path:
    """The chart's rules written to `directory/name` after promtool accepted them."""
    directory.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(rule_groups(values), sort_keys=False)
    # Checked under a name Prometheus's `*.yml` glob skips, then renamed: it never loads a
    # half-written or rejected file.
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".checking",
                                     delete=False) as staged:
        staged.write(text)
    try:
        check_rules(Path(staged.name))
        target = directory / name
        os.replace(staged.name, target)
        return target
    finally:
        Path(staged.name).unlink(missing_ok=True)


def loaded_groups(prometheus_url: str, path: Path) -> list[str]:
    """The names of the rule groups Prometheus has loaded from `path`."""
    response = requests.get(f"{prometheus_url}/api/v1/rules", timeout=10)
    response.raise_for_status()
    return [g["name"] for g in response.json()["data"]["groups"]
            if Path(g["file"]).resolve() == path.resolve()]


def install(stack_dir: Path, prometheus_url: str, name: str, values: Sequence[str] = ()
            ) -> Path:
    """Load the chart's rules into the stack's Prometheus as `rules/<name>.yml`."""
    path = checked_rule_file(values, stack_dir / "prometheus" / "rules", f"{name}.yml")
    services.reload(prometheus_url)
    expected = [g["name"] for g in yaml.safe_load(path.read_text())["groups"]]
    loaded = loaded_groups(prometheus_url, path)
    if sorted(loaded) != sorted(expected):
        raise AssertionError(f"Prometheus loaded {loaded} from {path}, not {expected}")
    return path


def uninstall(path: Path, prometheus_url: str) -> None:
    path.unlink(missing_ok=True)
    services.reload(prometheus_url)


@contextlib.contextmanager
def installed(stack_dir: Path, prometheus_url: str, name: str, values: Sequence[str] = ()
              ) -> Iterator[Path]:
    """The chart's rules loaded for the block, removed (and Prometheus reloaded) after it."""
    path = install(stack_dir, prometheus_url, name, values)
    try:
        yield path
    finally:
        uninstall(path, prometheus_url)


def route_matchers(values: Sequence[str] = ()) -> list[str]:
    """The chart's AlertmanagerConfig route matchers as Alertmanager matcher strings (what a
    receiver fragment in `<stack>/alertmanager/receivers/` takes). The Prometheus Operator
    also scopes that route to alerts of its namespace; a fragment adds that matcher itself."""
    config = render("alertmanagerconfig.yaml",
                    ["--set", "webhook.enabled=true", "--set", "prometheusRule.enabled=true",
                     "--set", "prometheusRule.alertmanagerConfig.enabled=true", *values],
                    release="tailor", namespace="tailor-system")
    matchers = []
    for m in config["spec"]["route"]["matchers"]:
        kind = m.get("matchType", "=")
        assert kind in MATCH_TYPES, m
        matchers.append(f'{m["name"]}{kind}"{m["value"]}"')
    return matchers
