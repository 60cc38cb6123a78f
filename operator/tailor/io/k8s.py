"""The one module that calls the Kubernetes API (besides Kopf's own watches).

Objects go in and come out as plain dicts in the API's JSON shape. Every request is counted in
`tailor_api_requests_total`.

A request that fails transiently (the connection refused or reset, a read timeout, 429 Too Many
Requests, 500/502/503/504) is retried with capped exponential backoff and full jitter, at most
`RetryPolicy.attempts` times within `RetryPolicy.deadline` seconds, then the error propagates as
it would have (`retry_delay` decides; each retry is counted in `tailor_api_retries_total`).
Retrying is safe for every request the operator makes: a create whose first attempt did land
answers 409 AlreadyExists (`create` reads that as "exists"), a guarded status patch whose first
attempt landed answers 409 Conflict (the controller re-reads, as after any conflict), deletes
carry a uid precondition and treat 404/409 as done. No 409 and no other 4xx is ever retried
here: a conflict is the controller's optimistic concurrency, not a transient failure.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tailor_contract import clock
from tailor_contract.constants import DRIFTMONITOR_PLURAL, GROUP, TRAININGJOB_PLURAL, VERSION

from tailor.io import metrics

Obj = dict[str, Any]
POOL_SIZE = 32  # Kopf's handler threads
EVENT_THREADS = 4  # threads that post Events


class Conflict(Exception):
    """The object changed since it was read (optimistic concurrency)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries: `attempts` in all (1: no retry), each retry after a delay
    drawn uniformly from [0, min(cap, base * 2**retry)] ("full jitter": a thousand reconciles
    that failed together do not come back together), and none once `deadline` seconds have
    passed since the first attempt. A 429's Retry-After is honoured up to `cap`."""

    attempts: int = 6
    base: float = 0.25
    cap: float = 8.0
    deadline: float = 30.0
    timeout: float = 30.0
    """Seconds a request may wait for its answer (connecting: at most 5), so that a hung API
    server is a read timeout, retried, and never a handler thread blocked for good."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.deadline < 0 \
                or self.timeout <= 0:
            raise ValueError(f"invalid retry policy: {self}")


RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def transient_reason(error: BaseException) -> str | None:
    """Why `error` is worth retrying (the `reason` label of tailor_api_retries_total), or None
    when it is not: a status the server meant (404, 409, 422, ...) or not an API error at all."""
    if isinstance(error, ApiException):
        if error.status == 0 and any(word in str(error.reason) for word in ("EOF", "reset")):
            return "connection"  # the TLS session cut short (the client reports it as status 0)
        return str(error.status) if error.status in RETRIED_STATUSES else None
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason  # urllib3's own retries (if configured) wrap the last error
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return "timeout"
    if isinstance(error, (urllib3.exceptions.NewConnectionError,
                          urllib3.exceptions.ConnectTimeoutError)):
        return "connection"  # refused, unreachable, or no answer to the handshake
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return "connection"  # reset, or closed mid-answer (RemoteDisconnected)
    return None


def _retry_after(error: ApiException) -> float | None:
    """A 429's Retry-After in seconds (the integer form; an HTTP date is ignored)."""
    headers = error.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def retry_delay(error: BaseException, retry: int, elapsed: float, policy: RetryPolicy,
                rng: random.Random) -> tuple[str, float] | None:
    """Whether to retry after `error`, the `retry`-th retry (0 for the first) of a request
    that started `elapsed` seconds ago: (reason, seconds to wait first), or None to give up."""
    reason = transient_reason(error)
    if reason is None or retry + 1 >= policy.attempts:
        return None
    ceiling = min(policy.cap, policy.base * 2 ** retry)
    delay = rng.uniform(0.0, ceiling)
    if isinstance(error, ApiException) and error.status == 429:
        after = _retry_after(error)
        if after is not None:
            delay = min(policy.cap, after)
    if elapsed + delay > policy.deadline:
        return None
    return reason, delay


def slim(body: Mapping[str, Any], *, keep_spec: bool = True) -> Obj:
    """What the controller reads of an object, without the bulk it never reads (managed
    fields, kubectl's last-applied copy, a Job's pod template): the indexes hold one per
    object, so this is most of the operator's memory at scale."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    meta["annotations"] = annotations
    result: Obj = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": meta,
              "status": dict(body.get("status") or {})}
    spec = dict(body.get("spec") or {})
    result["spec"] = spec if keep_spec else {k: spec[k] for k in ("suspend",) if k in spec}
    return result


def _resource_of(url: str) -> str:
    """`pods`, `jobs`, `trainingjobs/status`, ... from a request URL."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if "namespaces" in parts[:4] and parts.index("namespaces") + 2 < len(parts):
        rest = parts[parts.index("namespaces") + 2:]  # after the namespace's name
    else:
        rest = parts[3:] if parts[:1] == ["apis"] else parts[2:]  # after the version
    if len(rest) >= 3:
        return f"{rest[0]}/{rest[2]}"  # a subresource: <resource>/<name>/<subresource>
    return rest[0] if rest else "?"


class Kube:
    """Plain JSON requests through the Kubernetes client's connection pool and credentials.

    The generated API methods validate arguments and convert bodies through pydantic models
    on every call; at a thousand jobs that was a large share of the operator's CPU, so the
    controllers send and receive dicts as they are."""

    def __init__(self, api_client: client.ApiClient | None = None, *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        if api_client is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            configuration = client.Configuration.get_default_copy()
            # As many connections as threads that make requests (Kopf's handler threads, as
            # many creating Services, the Event posters, housekeeping, drift checks, the
            # webhook): a pool smaller than its threads makes urllib3 drop connections and
            # pay a TLS handshake for each new one.
            configuration.connection_pool_maxsize = 2 * POOL_SIZE + EVENT_THREADS + 4
            # No silent urllib3 retries underneath ours (its default is 3, without backoff).
            configuration.retries = False
            api_client = client.ApiClient(configuration)
        self.api_client = api_client
        rest_client = api_client.rest_client
        original = rest_client.request

        def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            code = "error"
            try:
                response = original(method, url, *args, **kwargs)  # type: ignore[no-untyped-call]
                code = str(response.status)
                return response
            finally:
                metrics.API_REQUESTS.labels(method, _resource_of(url), code).inc()

        rest_client.request = counted  # type: ignore[method-assign]

    def _call(self, method: str, path: str, body: Any = None, *,
              query: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> Obj:
        """One request, retried while it fails transiently (`retry_delay`); the decoded JSON
        answer. Raises ApiException on a non-2xx status, or the last connection error."""
        started = time.monotonic()
        retry = 0
        while True:
            try:
                return self._request(method, path, body, query, content_type)
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                decision = retry_delay(error, retry, time.monotonic() - started, self.retry,
                                       self._rng)
                if decision is None:
                    raise
                metrics.API_RETRIES.labels(decision[0]).inc()
                self._sleep(decision[1])
                retry += 1

    def _request(self, method: str, path: str, body: Any, query: Mapping[str, str] | None,
                 content_type: str) -> Obj:
        api = self.api_client
        headers = {**api.default_headers, "Accept": "application/json",
                   "Content-Type": content_type}
        api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        url = f"{api.configuration.host}{path}"
        if query:
            url = f"{url}?{urlencode(query)}"
        timeout = (min(5.0, self.retry.timeout), self.retry.timeout)
        response = api.rest_client.request(  # type: ignore[no-untyped-call]
            method, url, headers=headers, body=body, _request_timeout=timeout)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"),
                                             data=None)
        result: Obj = json.loads(data)
        return result

    # --------------------------------------------------------------- children
    def create(self, obj: Obj) -> Obj | None:
        """Create a Service or Job; None if it exists already (names are deterministic)."""
        ns = obj["metadata"]["namespace"]
        prefixes = {"Service": "/api/v1", "Job": "/apis/batch/v1"}
        if obj["kind"] not in prefixes:
            raise ValueError(obj["kind"])
        plural = obj["kind"].lower() + "s"
        try:
            return self._call("POST", f"{prefixes[obj['kind']]}/namespaces/{ns}/{plural}", obj)
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    def get_job(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Foreground deletion: the Job disappears only after its pods are gone, so a new
        worker group never overlaps the old one."""
        options: Obj = {"apiVersion": "v1", "kind": "DeleteOptions",
                        "propagationPolicy": "Foreground"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def list_jobs(self, namespace: str, selector: str) -> list[Obj]:
        items: list[Obj] = self._call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs",
                                      query={"labelSelector": selector})["items"]
        return items

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        items: list[Obj] = self._call("GET", f"/api/v1/namespaces/{namespace}/pods",
                                      query={"labelSelector": selector})["items"]
        return items

    # --------------------------------------------------------------- TrainingJobs
    @staticmethod
    def _custom_path(plural: str, namespace: str, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def get_trainingjob(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(self._custom_path(TRAININGJOB_PLURAL, namespace, name))

    def patch_trainingjob_status(self, body: Obj, status: Obj, *, precondition: bool = True
                                 ) -> Obj | None:
        return self._patch_status(TRAININGJOB_PLURAL, body, status, precondition)

    def delete_trainingjob(self, namespace: str, name: str, uid: str) -> None:
        try:
            self._call("DELETE", self._custom_path(TRAININGJOB_PLURAL, namespace, name),
                       {"apiVersion": "v1", "kind": "DeleteOptions",
                        "preconditions": {"uid": uid}})
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def create_trainingjob(self, obj: Obj) -> Obj | None:
        """Create a TrainingJob; None if one of that name exists (names are deterministic)."""
        try:
            return self._call("POST", self._custom_path(TRAININGJOB_PLURAL,
                                                        obj["metadata"]["namespace"]), obj)
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    def list_trainingjobs(self, namespace: str, selector: str) -> list[Obj]:
        items: list[Obj] = self._call("GET", self._custom_path(TRAININGJOB_PLURAL, namespace),
                                      query={"labelSelector": selector})["items"]
        return items

    # --------------------------------------------------------------- DriftMonitors
    def patch_driftmonitor_status(self, body: Obj, status: Obj, *, precondition: bool = True
                                  ) -> Obj | None:
        return self._patch_status(DRIFTMONITOR_PLURAL, body, status, precondition)

    def _patch_status(self, plural: str, body: Obj, status: Obj, precondition: bool
                      ) -> Obj | None:
        """Merge-patch a Tailor object's status; with `precondition`, only if the object is
        unchanged since `body` was read (raises Conflict otherwise). None if it is gone."""
        meta = body["metadata"]
        patch: Obj = {"status": status}
        if precondition:
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        path = self._custom_path(plural, meta["namespace"], meta["name"]) + "/status"
        try:
            return self._call("PATCH", path, patch, content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status == 409:
                raise Conflict(meta["name"]) from error
            if error.status == 404:
                return None
            raise

    def get_driftmonitor(self, namespace: str, name: str) -> Obj | None:
        return self._get_or_none(self._custom_path(DRIFTMONITOR_PLURAL, namespace, name))

    def _get_or_none(self, path: str) -> Obj | None:
        try:
            return self._call("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret a spec references by name (get only: never list or watch)."""
        secret = self._get_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if secret is None:
            return None
        value = (secret.get("data") or {}).get(key)
        return base64.b64decode(value).decode() if value is not None else None

    # --------------------------------------------------------------- events
    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        stamp = clock.stamp()
        event = {
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}",
                         "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved.get("apiVersion"),
                               "kind": involved.get("kind"), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": "tailor-operator"}, "reportingComponent": "tailor.dev/operator",
            "reportingInstance": "tailor-operator", "firstTimestamp": stamp,
            "lastTimestamp": stamp, "count": 1,
        }
        # An Event is best-effort; the status carries the same information.
        with contextlib.suppress(ApiException):
            self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
