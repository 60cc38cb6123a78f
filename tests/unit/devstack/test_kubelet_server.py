"""The kubelet port on its own: it serves logs from any `LogSource`, not only the node agent,
and only to clients with a certificate of the cluster's CA."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from tailor_devstack.nodeagent.kubelet_server import KubeletServer, serve_kubelet_api
from tailor_devstack.pki import PKI, Identity

CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                  ("system:masters",))


@dataclass
class Logs:
    """A LogSource with one container's log."""

    path: Path
    running: bool = False

    def log_file(self, namespace: str, name: str, container: str, previous: bool
                 ) -> tuple[Path | None, Callable[[], bool]]:
        if (namespace, name, container, previous) != ("ns", "pod", "main", False):
            return None, lambda: False
        return self.path, lambda: self.running


@dataclass
class Served:
    url: str
    pki: PKI
    logs: Logs

    def get(self, path: str, **params: str) -> requests.Response:
        client = (str(self.pki.cert(CLIENT.name)), str(self.pki.key(CLIENT.name)))
        return requests.get(self.url + path, params=params, cert=client,
                            verify=str(self.pki.ca_cert), timeout=10)


def make_pki(directory: Path) -> PKI:
    pki = PKI(directory)
    pki.ensure(server_ips=["127.0.0.1"], server_names=["localhost"], clients=[CLIENT])
    return pki


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("kubelet")
    pki = make_pki(root / "pki")
    logs = Logs(root / "main.log")
    logs.path.write_text("one\ntwo\nthree\n")
    server = serve_kubelet_api(logs, host="127.0.0.1", port=0, ca_file=str(pki.ca_cert),
                               cert_file=str(pki.cert("serving")),
                               key_file=str(pki.key("serving")))
    assert isinstance(server, KubeletServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(f"https://127.0.0.1:{server.server_address[1]}", pki, logs)
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_logs_whole_tailed_and_limited(served: Served) -> None:
    assert served.get("/containerLogs/ns/pod/main").text == "one\ntwo\nthree\n"
    assert served.get("/containerLogs/ns/pod/main", tailLines="2").text == "two\nthree\n"
    assert served.get("/containerLogs/ns/pod/main", tailLines="0").text == ""
    assert served.get("/containerLogs/ns/pod/main", limitBytes="5").text == "one\nt"


def test_follow_ends_with_the_run(served: Served) -> None:
    response = served.get("/containerLogs/ns/pod/main", follow="true")
    assert (response.status_code, response.text) == (200, "one\ntwo\nthree\n")


def test_unknown_logs_and_paths_are_404(served: Served) -> None:
    missing = served.get("/containerLogs/ns/pod/main", previous="true")
    assert missing.status_code == 404
    assert "no logs for container 'main' of pod ns/pod" in missing.text
    assert served.get("/exec/ns/pod/main").status_code == 404
    assert served.get("/healthz").text == "ok"


def test_a_client_of_another_ca_is_refused(served: Served, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path / "other")
    client = (str(stranger.cert(CLIENT.name)), str(stranger.key(CLIENT.name)))
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError or reset
        requests.get(served.url + "/healthz", cert=client, verify=str(served.pki.ca_cert),
                     timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError or reset
        requests.get(served.url + "/healthz", verify=str(served.pki.ca_cert), timeout=10)
