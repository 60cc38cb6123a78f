"""The API calls a kubelet makes for one pod.

Events, its status, the Secrets, ConfigMaps and ServiceAccount tokens its volumes and
environment need, and the final deletion. The Node authorizer lets the node read a Secret or
ConfigMap only while a pod bound to it uses it, as it lets a kubelet.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from tailor_devstack.nodeagent import podspec
from tailor_devstack.nodeagent.api import JSON, ApiError, KubeClient, now
from tailor_devstack.nodeagent.runtime import decode_data

log = logging.getLogger("tailor.nodeagent")
BytesLookup = Callable[[str, str], dict[str, bytes] | None]


class PodApi:
    def __init__(self, api: KubeClient, node_name: str, pod: JSON) -> None:
        self.api = api
        self.node_name = node_name
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Post an Event about the pod; a failure to post is logged, never raised."""
        stamp = now()
        body = {
            "metadata": {"name": f"{self.name}.{secrets.token_hex(8)}",
                         "namespace": self.namespace},
            "involvedObject": {"kind": "Pod", "namespace": self.namespace, "name": self.name,
                               "uid": self.uid, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self.node_name},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.node_name,
        }
        try:
            self.api.create(f"/api/v1/namespaces/{self.namespace}/events", body)
        except ApiError as error:
            log.warning("event %s on %s/%s not posted: %s", reason, self.namespace, self.name,
                        error)

    def data(self, kind: str) -> BytesLookup:
        """A lookup of the data of `kind` (secrets, configmaps) by namespace and name."""
        def lookup(namespace: str, name: str) -> dict[str, bytes] | None:
            try:
                return decode_data(self.api.get(
                    f"/api/v1/namespaces/{namespace}/{kind}/{name}"))
            except ApiError as error:
                if error.status == 404:
                    return None
                raise
        return lookup

    def text_data(self, kind: str) -> podspec.DataLookup:
        """The same lookup with the values as text, as environment variables take them."""
        raw = self.data(kind)

        def lookup(namespace: str, name: str) -> dict[str, str] | None:
            data = raw(namespace, name)
            return None if data is None else {k: v.decode(errors="replace")
                                              for k, v in data.items()}
        return lookup

    def token(self, service_account: str, source: JSON) -> str:
        """A token for a projected serviceAccountToken volume source, bound to the pod."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": [source["audience"]] if source.get("audience") else [],
            "expirationSeconds": int(source.get("expirationSeconds", 3607)),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name,
                               "uid": self.uid}}}
        response = self.api.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{service_account}/token",
            request)
        token: str = response["status"]["token"]
        return token

    def patch_status(self, status: JSON) -> JSON | None:
        """The pod as updated, or None where the update failed (the next publish retries)."""
        try:
            return self.api.merge_patch(f"{self.path}/status", {"status": status})
        except ApiError as error:
            if error.status != 404:
                log.warning("status of %s/%s not updated: %s", self.namespace, self.name, error)
            return None

    def finalize_deletion(self) -> None:
        """Confirm the deletion to the API server, as the kubelet does once containers are gone."""
        try:
            self.api.delete(self.path, {"gracePeriodSeconds": 0,
                                        "preconditions": {"uid": self.uid}})
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("pod %s/%s not finalized: %s", self.namespace, self.name, error)
