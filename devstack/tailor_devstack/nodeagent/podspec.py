"""Pure Pod-spec logic of the node agent: what it supports, and each container's environment.

No I/O here: lookups of Secrets and ConfigMaps are passed in as functions, so every rule can be
unit-tested. Pods use the API's JSON shape (camelCase dicts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

Pod = Mapping[str, Any]
Container = Mapping[str, Any]
# (namespace, name) -> the object's `data` (values decoded to str), or None if it does not exist
DataLookup = Callable[[str, str], Mapping[str, str] | None]

SUPPORTED_VOLUMES = {"emptyDir", "secret", "configMap", "projected", "downwardAPI", "hostPath"}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class UnsupportedPod(ValueError):
    """The Pod asks for something the node agent cannot do faithfully; it is refused."""


class EnvError(ValueError):
    """An env source is missing (the kubelet reports CreateContainerConfigError)."""


def unsupported_features(pod: Pod) -> list[str]:
    """Every feature of `pod` this agent would otherwise silently run wrongly."""
    spec = pod.get("spec", {})
    problems = []
    for volume in spec.get("volumes", []) or []:
        kinds = set(volume) - {"name"}
        if not kinds <= SUPPORTED_VOLUMES:
            problems.append(f"volume {volume['name']!r} of type {', '.join(sorted(kinds))}")
    for field in ("hostPID", "hostIPC", "shareProcessNamespace"):
        if spec.get(field):
            problems.append(f"spec.{field}")
    if spec.get("ephemeralContainers"):
        problems.append("ephemeral containers")
    for kind in ("initContainers", "containers"):
        for c in spec.get(kind, []) or []:
            where = f"{kind[:-1]} {c['name']!r}"
            if not c.get("command"):
                problems.append(f"{where} has no command (image entrypoints are not known here)")
            if kind == "initContainers" and c.get("restartPolicy") == "Always":
                problems.append(f"{where} is a sidecar (restartPolicy: Always)")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(probe) is not None:
                    problems.append(f"{where} has a {probe}")
            if c.get("lifecycle") is not None:
                problems.append(f"{where} has lifecycle hooks")
            for mount in c.get("volumeMounts", []) or []:
                if mount.get("subPathExpr"):
                    problems.append(f"{where} mounts with subPathExpr")
            if c.get("volumeDevices"):
                problems.append(f"{where} has volumeDevices")
    return problems


def _field_value(pod: Pod, path: str) -> str:
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs", []) or []),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs", []) or []),
    }
    if path not in simple:
        raise EnvError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def field_ref(pod: Pod, path: str) -> str:
    """The value of a downward-API `fieldRef.fieldPath`."""
    return _field_value(pod, path)


def quantity(text: str | int) -> Decimal:
    """A resource quantity (`500m`, `1.5Gi`, `4Pi`, `1e3`) as a number: the Kubernetes client's
    parser, typed; ValueError for anything else."""
    value: Decimal = parse_quantity(text)  # type: ignore[no-untyped-call]
    return value


def _quantity_value(text: str, divisor: str) -> str:
    value = quantity(text) / quantity(divisor or "1")
    whole = int(value) if value == int(value) else int(value) + 1  # the kubelet rounds up
    return str(whole)


def resource_field(container: Container, resource: str, divisor: str = "1") -> str:
    resources = container.get("resources", {}) or {}
    kind, _, name = resource.partition(".")
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = "0" if kind == "requests" else "1000000000000"
    return _quantity_value(str(value), divisor)


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names expand, `$$` escapes, unknown stay as is."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, value)


def container_env(
    pod: Pod,
    container: Container,
    *,
    secrets: DataLookup,
    config_maps: DataLookup,
    defaults: Mapping[str, str],
) -> dict[str, str]:
    """The environment a container starts with, in the kubelet's order of precedence."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {"PATH": DEFAULT_PATH, **defaults}
    for source in container.get("envFrom", []) or []:
        prefix = source.get("prefix", "")
        for kind, lookup in (("configMapRef", config_maps), ("secretRef", secrets)):
            ref = source.get(kind)
            if ref is None:
                continue
            data = lookup(namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f"{kind} {ref['name']!r} not found")
            for key, value in data.items():
                env[prefix + key] = value
    for var in container.get("env", []) or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = _field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            env[name] = resource_field(container, ref["resource"], ref.get("divisor", "1"))
        else:
            kind, lookup = (("secretKeyRef", secrets) if "secretKeyRef" in source
                            else ("configMapKeyRef", config_maps))
            ref = source[kind]
            data = lookup(namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = "not found" if data is None else f"has no key {ref['key']!r}"
                raise EnvError(f"{kind} {ref['name']!r} {what}")
            env[name] = data[ref["key"]]
    return env


def shm_size_limit(pod: Pod) -> int | None:
    """The bytes of /dev/shm: the sizeLimit of an emptyDir mounted there, if any (the last
    one a container mounts wins), else None for the runtime's default."""
    spec = pod["spec"]
    size = None
    for volume in spec.get("volumes", []) or []:
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []) or []:
                if m["name"] == volume["name"] and m["mountPath"] == "/dev/shm" \
                        and (volume.get("emptyDir") or {}).get("sizeLimit"):
                    size = int(quantity(volume["emptyDir"]["sizeLimit"]))
    return size


def command_line(container: Container, env: Mapping[str, str]) -> list[str]:
    return [expand(part, env) for part in
            list(container.get("command", []) or []) + list(container.get("args", []) or [])]


def pod_phase(states: list[tuple[str, int | None]]) -> str:
    """The phase of a pod from its main containers' `(state, exit code)`.

    state is one of waiting, running, terminated; a terminated container that will restart
    counts as waiting.
    """
    if any(state in ("running", "waiting") for state, _ in states):
        return "Running" if any(s == "running" for s, _ in states) else "Pending"
    if all(code == 0 for _, code in states):
        return "Succeeded"
    return "Failed"


def will_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def backoff_seconds(restarts: int, *, initial: float = 1.0, cap: float = 30.0) -> float:
    """Crash-loop back-off: doubles per restart from `initial`, capped (the kubelet's is
    10 s to 5 min; shorter here so tests of restarts stay fast)."""
    return float(min(cap, initial * (2 ** max(0, restarts - 1))))
