"""Argo CD health (gitops/argocd/*/health.lua, run by a real Lua 5.4) and kstatus (cli-utils,
what Flux waits on) for TrainingJobs and DriftMonitors in every state."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_samples import Sample, driftmonitors, trainingjobs
from conftest import REPO

HEALTH = REPO / "gitops" / "argocd" / "tailor.dev"
CASES = {"TrainingJob": trainingjobs(), "DriftMonitor": driftmonitors()}
# Argo CD runs a health script with the object in the global `obj`; so does this harness.
HARNESS = """
local script, data = arg[1], arg[2]
for _, object in ipairs(dofile(data)) do
  local env = setmetatable({obj = object}, {__index = _G})
  local hs = assert(loadfile(script, "t", env))()
  io.write(hs.status, "\\t", (hs.message or ""):gsub("[\\t\\n]", " "), "\\n")
end
"""


def to_lua(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def lua_health(lua: Path, kind: str, objects: list[dict[str, Any]], tmp_path: Path
               ) -> list[tuple[str, str]]:
    data = tmp_path / f"{kind}.lua"
    data.write_text("return " + to_lua(objects))
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS)
    out = subprocess.run([str(lua), str(harness), str(HEALTH / kind / "health.lua"), str(data)],
                         check=True, capture_output=True, text=True).stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines()]


def kstatus_of(kstatus: Path, objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = subprocess.run([str(kstatus)], input=json.dumps(objects), check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / f"{kind.lower()}s.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind", CASES)
def test_every_sample_is_a_valid_object_of_its_crd(kind: str) -> None:
    validator = jsonschema.Draft7Validator(crd_schema(kind))
    for sample in CASES[kind]:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
                  for e in validator.iter_errors(sample.obj)]
        assert not errors, (sample.state, errors)


@pytest.mark.parametrize("kind", CASES)
def test_argocd_health_in_every_state(kind: str, lua: Path, tmp_path: Path) -> None:
    samples: list[Sample] = CASES[kind]
    got = lua_health(lua, kind, [s.obj for s in samples], tmp_path)
    assert len(got) == len(samples)
    assert {s.state: status for s, (status, _) in zip(samples, got, strict=True)} == \
        {s.state: s.argocd for s in samples}
    for sample, (status, message) in zip(samples, got, strict=True):
        assert message, f"{sample.state}: {status} without a message"
        failing = [c for c in sample.obj.get("status", {}).get("conditions", [])
                   if c["type"] in ("Failed", "Stalled") and c["status"] == "True"]
        if status == "Degraded" and failing:
            # The reason a user needs is in the message Argo CD shows.
            assert failing[0]["reason"] in message, (sample.state, message)


def test_trainingjob_health_message_carries_progress(lua: Path, tmp_path: Path) -> None:
    running = next(s for s in CASES["TrainingJob"] if s.state == "running").obj
    running["status"]["progress"] = {"summary": "40%"}
    [(status, message)] = lua_health(lua, "TrainingJob", [running], tmp_path)
    assert status == "Progressing" and message.endswith("(40%)") and "WorkersRunning" in message


@pytest.mark.parametrize("kind", CASES)
def test_kstatus_in_every_state(kind: str, kstatus: Path) -> None:
    samples: list[Sample] = CASES[kind]
    got = kstatus_of(kstatus, [s.obj for s in samples])
    assert {s.state: r["status"] for s, r in zip(samples, got, strict=True)} == \
        {s.state: s.kstatus for s in samples}


def test_flux_waits_for_a_trainingjob_until_it_finishes(kstatus: Path) -> None:
    """Flux's `wait: true` blocks while an object is InProgress and fails on Failed: a running
    job keeps the Kustomization not-ready, a finished one releases it, a failed one fails it."""
    by_state = {s.state: s.obj for s in CASES["TrainingJob"]}
    order = ["pending: worker group created", "running", "restarting after OOMKilled",
             "succeeded"]
    statuses = [r["status"] for r in kstatus_of(kstatus, [by_state[s] for s in order])]
    assert statuses == ["InProgress", "InProgress", "InProgress", "Current"]
    failed = by_state["failed permanently"]
    stalled = next(c for c in failed["status"]["conditions"] if c["type"] == "Stalled")
    [result] = kstatus_of(kstatus, [failed])
    assert result == {"kind": "TrainingJob", "name": "bbc", "status": "Failed",
                      "message": stalled["message"]}
    assert "exit code 42" in result["message"]
