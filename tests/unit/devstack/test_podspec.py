from __future__ import annotations

from typing import Any

import pytest
from tailor_devstack.nodeagent import podspec

POD: dict[str, Any] = {
    "metadata": {"name": "w-0", "namespace": "ml", "uid": "u-1",
                 "labels": {"batch.kubernetes.io/job-completion-index": "0"},
                 "annotations": {"note": "hi"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "trainer", "containers": []},
    "status": {"podIP": "198.18.0.5", "hostIP": "198.18.0.1"},
}


def lookup(store: dict[tuple[str, str], dict[str, str]]) -> podspec.DataLookup:
    return lambda ns, name: store.get((ns, name))


def env_of(container: dict[str, Any], secrets: Any = None, config_maps: Any = None
           ) -> dict[str, str]:
    return podspec.container_env(POD, container, secrets=lookup(secrets or {}),
                                 config_maps=lookup(config_maps or {}), defaults={"HOME": "/tmp"})


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "x", "B": "y"}
    assert podspec.expand("$(A)-$(B)", env) == "x-y"
    assert podspec.expand("$(MISSING)", env) == "$(MISSING)"
    assert podspec.expand("$$(A)", env) == "$(A)"
    assert podspec.expand("cost: $$5", env) == "cost: $5"


def test_env_precedence_and_sources() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "HOME", "value": "/home/me"},
            {"name": "IDX", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "URL", "value": "http://$(IP):80"},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                               "divisor": "1Mi"}}},
        ],
        "resources": {"limits": {"memory": "1Gi"}},
    }
    env = env_of(container, secrets={("ml", "s"): {"k": "v"}},
                 config_maps={("ml", "cm"): {"MODE": "fast"}})
    assert env["HOME"] == "/home/me"
    assert env["CM_MODE"] == "fast"
    assert env["IDX"] == "0"
    assert env["URL"] == "http://198.18.0.5:80"
    assert env["KEY"] == "v"
    assert env["MEM"] == "1024"
    assert env["PATH"] == podspec.DEFAULT_PATH


def test_a_missing_secret_is_an_error_unless_optional() -> None:
    ref: dict[str, Any] = {"name": "KEY",
                           "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
    with pytest.raises(podspec.EnvError, match="secretKeyRef 'absent' not found"):
        env_of({"env": [ref]})
    ref["valueFrom"]["secretKeyRef"]["optional"] = True
    assert "KEY" not in env_of({"env": [ref]})
    with pytest.raises(podspec.EnvError, match="has no key 'other'"):
        env_of({"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key":
                                                                     "other"}}}]},
               secrets={("ml", "s"): {"k": "v"}})


@pytest.mark.parametrize(("change", "expected"), [
    ({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}]},
     "volume 'data' of type persistentVolumeClaim"),
    ({"hostPID": True}, "spec.hostPID"),
    ({"containers": [{"name": "c", "image": "i"}]}, "has no command"),
    ({"containers": [{"name": "c", "command": ["x"], "livenessProbe": {}}]}, "livenessProbe"),
    ({"initContainers": [{"name": "s", "command": ["x"], "restartPolicy": "Always"}],
      "containers": [{"name": "c", "command": ["x"]}]}, "sidecar"),
])
def test_unsupported_features_are_named(change: dict[str, Any], expected: str) -> None:
    pod = {"spec": {"containers": [{"name": "c", "command": ["true"]}], **change}}
    problems = podspec.unsupported_features(pod)
    assert any(expected in p for p in problems), problems


def test_a_plain_pod_is_supported() -> None:
    pod = {"spec": {"containers": [{"name": "c", "command": ["true"]}],
                    "volumes": [{"name": "v", "emptyDir": {}},
                                {"name": "t", "projected": {"sources": []}}]}}
    assert podspec.unsupported_features(pod) == []


@pytest.mark.parametrize(("states", "phase"), [
    ([("running", None), ("terminated", 0)], "Running"),
    ([("terminated", 0), ("terminated", 0)], "Succeeded"),
    ([("terminated", 0), ("terminated", 2)], "Failed"),
    ([("waiting", None)], "Pending"),
])
def test_pod_phase(states: list[tuple[str, int | None]], phase: str) -> None:
    assert podspec.pod_phase(states) == phase


def test_restart_policy_and_backoff() -> None:
    assert podspec.will_restart("Always", 0)
    assert podspec.will_restart("OnFailure", 1) and not podspec.will_restart("OnFailure", 0)
    assert not podspec.will_restart("Never", 1)
    assert [podspec.backoff_seconds(n) for n in (1, 2, 3, 10)] == [1, 2, 4, 30]
