"""Cluster DNS as hosts files: what CoreDNS would answer, written into each pod's /etc/hosts.

There is no DNS server and no kube-proxy. Names resolve straight to pod IPs:
- `<svc>.<ns>.svc.cluster.local` to the IPs of the running pods its selector matches (headless
  or not: a ClusterIP is never routed here, so a Service's port must equal its targetPort);
- `<hostname>.<subdomain>.<ns>.svc.cluster.local` to the pod's IP when a Service named
  `<subdomain>` exists in the namespace (as for an Indexed Job's workers);
- `kubernetes.default.svc.cluster.local` to the API server.
A pod also gets the short forms its namespace's search path would allow (`<svc>`,
`<svc>.<ns>`, `<svc>.<ns>.svc`, `<hostname>.<subdomain>`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

DOMAIN = "cluster.local"


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _serving(pod: Mapping[str, Any]) -> bool:
    return (bool(pod.get("status", {}).get("podIP"))
            and pod.get("status", {}).get("phase") in ("Pending", "Running")
            and not pod["metadata"].get("deletionTimestamp"))


def cluster_records(pods: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]],
                    api_server_ip: str) -> dict[str, dict[str, list[str]]]:
    """namespace -> {relative name -> IPs}, relative names lacking `.svc.cluster.local`."""
    records: dict[str, dict[str, list[str]]] = defaultdict(dict)
    records["default"]["kubernetes.default"] = [api_server_ip]
    live = [p for p in pods if _serving(p)]
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        selector = svc.get("spec", {}).get("selector") or {}
        members = [p for p in live if p["metadata"]["namespace"] == ns
                   and _matches(selector, p["metadata"].get("labels") or {})]
        if members:
            records[ns][f"{name}.{ns}"] = sorted({p["status"]["podIP"] for p in members})
        for pod in live:
            spec = pod.get("spec", {})
            if pod["metadata"]["namespace"] == ns and spec.get("subdomain") == name \
                    and spec.get("hostname"):
                records[ns][f"{spec['hostname']}.{name}.{ns}"] = [pod["status"]["podIP"]]
    return records


def hosts_file(pod: Mapping[str, Any], ip: str,
               records: Mapping[str, Mapping[str, list[str]]]) -> str:
    """The /etc/hosts of one pod."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    ns = meta["namespace"]
    hostname = spec.get("hostname") or meta["name"]
    own = [hostname]
    if spec.get("subdomain"):
        own.insert(0, f"{hostname}.{spec['subdomain']}.{ns}.svc.{DOMAIN}")
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{ip}\t{' '.join(own)}"]
    by_ip: dict[str, list[str]] = defaultdict(list)
    for record_ns, relatives in sorted(records.items()):
        for relative, ips in sorted(relatives.items()):
            aliases = [f"{relative}.svc.{DOMAIN}"]
            if record_ns == ns:
                short = relative.removesuffix(f".{ns}")
                aliases += [short, relative, f"{relative}.svc"]
            elif relative == "kubernetes.default":
                aliases += ["kubernetes.default", "kubernetes.default.svc"]
            for address in ips:
                by_ip[address].extend(aliases)
    for address, aliases_of_ip in by_ip.items():
        for name in dict.fromkeys(aliases_of_ip):
            lines.append(f"{address}\t{name}")
    return "\n".join(lines) + "\n"
