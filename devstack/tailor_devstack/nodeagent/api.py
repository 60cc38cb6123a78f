"""A small Kubernetes API client for the node agent, speaking JSON dicts.

The agent authenticates as `system:node:<name>` with its client certificate, so the API
server's Node authorizer and NodeRestriction admission limit it exactly as they limit a kubelet.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

JSON = dict[str, Any]
OUTAGE_SECONDS = 60.0
TRANSIENT = frozenset({429, 500, 502, 503, 504})


def now() -> str:
    """A timestamp as the API's `Time` fields take it (seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A timestamp as the API's `MicroTime` fields take it (a Lease's renewTime)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class KubeClient:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"]
        self.session = requests.Session()
        self.session.verify = cluster["certificate-authority"]
        self.session.cert = (user["client-certificate"], user["client-key"])

    def _request(self, method: str, path: str, *, body: JSON | None = None,
                 content_type: str = "application/json", params: JSON | None = None,
                 timeout: float = 30) -> JSON:
        """One request, tried again while the API server is away or overloaded (connection
        errors, 429, 5xx) for up to OUTAGE_SECONDS, as a kubelet keeps trying: a restarted
        API server must not strand a pod whose status the agent was writing."""
        delay, waited = 0.5, 0.0
        while True:
            try:
                response = self.session.request(
                    method, self.server + path, params=params, timeout=timeout,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type})
            except (requests.ConnectionError, requests.Timeout):
                if waited >= OUTAGE_SECONDS:
                    raise
            else:
                if response.status_code not in TRANSIENT or waited >= OUTAGE_SECONDS:
                    return self._answer(response)
            time.sleep(delay)  # backoff between attempts of a request bounded by OUTAGE_SECONDS
            waited += delay
            delay = min(delay * 2, 5.0)

    @staticmethod
    def _answer(response: requests.Response) -> JSON:
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message)
        result: JSON = response.json()
        return result

    def get(self, path: str, **params: Any) -> JSON:
        return self._request("GET", path, params=params or None)

    def create(self, path: str, body: JSON) -> JSON:
        return self._request("POST", path, body=body)

    def replace(self, path: str, body: JSON) -> JSON:
        return self._request("PUT", path, body=body)

    def merge_patch(self, path: str, body: JSON) -> JSON:
        return self._request("PATCH", path, body=body,
                             content_type="application/merge-patch+json")

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self._request("DELETE", path, body=body)

    def watch(self, path: str, **params: Any) -> Iterator[JSON]:
        """List then watch `path`: yields ADDED for existing objects, then live events.

        Returns when the server closes the watch (its timeout); the caller loops.
        """
        listing = self.get(path, **params)
        for item in listing.get("items", []):
            yield {"type": "ADDED", "object": item}
        params = {**params, "watch": "1", "resourceVersion":
                  listing["metadata"]["resourceVersion"], "allowWatchBookmarks": "false",
                  "timeoutSeconds": "300"}
        with self.session.get(self.server + path, params=params, stream=True,
                              timeout=(10, 330)) as response:
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.text)
            for line in response.iter_lines():
                if line:
                    event: JSON = json.loads(line)
                    if event["type"] == "ERROR":
                        raise ApiError(event["object"].get("code", 500),
                                       event["object"].get("message", ""))
                    yield event
