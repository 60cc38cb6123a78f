from __future__ import annotations

from typing import Any

from tailor_devstack.nodeagent import hosts


def pod(name: str, ns: str, ip: str, *, labels: dict[str, str] | None = None,
        hostname: str | None = None, subdomain: str | None = None,
        phase: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if hostname:
        spec |= {"hostname": hostname, "subdomain": subdomain}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec,
            "status": {"podIP": ip, "phase": phase}}


def service(name: str, ns: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector,
                                                                  "clusterIP": "None"}}


def test_records_for_services_and_subdomain_hostnames() -> None:
    pods = [pod("job-worker-0-abc", "ml", "10.0.0.2", labels={"app": "job"},
                hostname="job-worker-0", subdomain="job"),
            pod("job-worker-1-def", "ml", "10.0.0.3", labels={"app": "job"},
                hostname="job-worker-1", subdomain="job"),
            pod("done", "ml", "10.0.0.4", labels={"app": "job"}, phase="Succeeded"),
            pod("other", "team-b", "10.0.0.9", labels={"app": "job"})]
    records = hosts.cluster_records(pods, [service("job", "ml", {"app": "job"})], "10.0.0.1")
    assert records["ml"] == {"job.ml": ["10.0.0.2", "10.0.0.3"],
                             "job-worker-0.job.ml": ["10.0.0.2"],
                             "job-worker-1.job.ml": ["10.0.0.3"]}
    assert records["default"] == {"kubernetes.default": ["10.0.0.1"]}
    assert "team-b" not in records


def test_hosts_file_has_own_name_fqdns_and_namespace_short_names() -> None:
    me = pod("job-worker-1-def", "ml", "10.0.0.3", hostname="job-worker-1", subdomain="job")
    records = {"ml": {"job-worker-0.job.ml": ["10.0.0.2"]},
               "other": {"db.other": ["10.0.0.8"]},
               "default": {"kubernetes.default": ["10.0.0.1"]}}
    lines = hosts.hosts_file(me, "10.0.0.3", records).splitlines()
    assert "10.0.0.3\tjob-worker-1.job.ml.svc.cluster.local job-worker-1" in lines
    for name in ("job-worker-0.job.ml.svc.cluster.local", "job-worker-0.job",
                 "job-worker-0.job.ml", "job-worker-0.job.ml.svc"):
        assert f"10.0.0.2\t{name}" in lines
    assert "10.0.0.8\tdb.other.svc.cluster.local" in lines
    assert "10.0.0.8\tdb" not in lines  # short names only within the pod's own namespace
    assert "10.0.0.1\tkubernetes.default.svc" in lines
