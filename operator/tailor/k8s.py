"""The one module that calls the Kubernetes API (besides Kopf's own watches).

Objects go in and come out as plain dicts in the API's JSON shape. Every request is counted in
`tailor_api_requests_total`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tailor import metrics
from tailor.api.constants import DRIFTMONITOR_PLURAL, GROUP, TRAININGJOB_PLURAL, VERSION

Obj = dict[str, Any]
POOL_SIZE = 32


class Conflict(Exception):
    """The object changed since it was read (optimistic concurrency)."""


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
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            configuration = client.Configuration.get_default_copy()
            # As many connections as reconcile threads: a pool too small for its threads makes
            # urllib3 drop connections and pay a TLS handshake for each new one.
            configuration.connection_pool_maxsize = POOL_SIZE
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
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @staticmethod
    def _json(response: Any) -> Obj:
        result: Obj = json.loads(response.data)
        return result

    # --------------------------------------------------------------- children
    def create(self, obj: Obj) -> Obj | None:
        """Create a Service or Job; None if it exists already (names are deterministic)."""
        ns = obj["metadata"]["namespace"]
        try:
            # The client serializes dicts as they are; its stubs only name its model classes.
            response: Any
            if obj["kind"] == "Service":
                response = self.core.create_namespaced_service(
                    ns, obj, _preload_content=False)  # type: ignore[arg-type]
            elif obj["kind"] == "Job":
                response = self.batch.create_namespaced_job(
                    ns, obj, _preload_content=False)  # type: ignore[arg-type]
            else:
                raise ValueError(obj["kind"])
        except ApiException as error:
            if error.status == 409:
                return None
            raise
        return self._json(response)

    def get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._json(self.batch.read_namespaced_job(name, namespace,
                                                             _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Foreground deletion: the Job disappears only after its pods are gone, so a new
        worker group never overlaps the old one."""
        body = client.V1DeleteOptions(propagation_policy="Foreground",
                                      preconditions=client.V1Preconditions(uid=uid)
                                      if uid else None)
        try:
            self.batch.delete_namespaced_job(name, namespace, body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        response = self.core.list_namespaced_pod(namespace, label_selector=selector,
                                                 _preload_content=False)
        items: list[Obj] = self._json(response)["items"]
        return items

    # --------------------------------------------------------------- TrainingJobs
    def get_trainingjob(self, namespace: str, name: str) -> Obj | None:
        return self._get(TRAININGJOB_PLURAL, namespace, name)

    def patch_trainingjob_status(self, body: Obj, status: Obj, *, precondition: bool = True
                                 ) -> Obj | None:
        return self._patch_status(TRAININGJOB_PLURAL, body, status, precondition)

    def delete_trainingjob(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, TRAININGJOB_PLURAL, name,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)))
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def create_trainingjob(self, obj: Obj) -> Obj | None:
        """Create a TrainingJob; None if one of that name exists (names are deterministic)."""
        try:
            return self._json(self.custom.create_namespaced_custom_object(
                GROUP, VERSION, obj["metadata"]["namespace"], TRAININGJOB_PLURAL, obj,
                _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    def list_trainingjobs(self, namespace: str, selector: str) -> list[Obj]:
        items: list[Obj] = self._json(self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, TRAININGJOB_PLURAL, label_selector=selector,
            _preload_content=False))["items"]
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
        try:
            return self._json(self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], patch,
                _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                raise Conflict(meta["name"]) from error
            if error.status == 404:
                return None
            raise

    def get_driftmonitor(self, namespace: str, name: str) -> Obj | None:
        return self._get(DRIFTMONITOR_PLURAL, namespace, name)

    def _get(self, plural: str, namespace: str, name: str) -> Obj | None:
        try:
            return self._json(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret a spec references by name (get only: never list or watch)."""
        try:
            secret = self._json(self.core.read_namespaced_secret(name, namespace,
                                                                 _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        value = (secret.get("data") or {}).get(key)
        return base64.b64decode(value).decode() if value is not None else None

    # --------------------------------------------------------------- events
    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
            self.core.create_namespaced_event(meta["namespace"], event)  # type: ignore[arg-type]
