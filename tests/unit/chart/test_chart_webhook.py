"""The chart's alert webhook: plain HTTP only without a certificate, HTTPS from an existing
Secret or from a cert-manager Certificate (rendered only where the cluster serves
cert-manager.io/v1), the Secret mounted without subPath so renewals reach the running operator,
and the AlertmanagerConfig pointing at https with the CA it must trust."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tailor.settings import parse
from test_chart import container, one, render, render_error

WEBHOOK = ["--set", "webhook.enabled=true", "--set", "prometheusRule.enabled=true",
           "--set", "prometheusRule.alertmanagerConfig.enabled=true"]
CERT_MANAGER = [*WEBHOOK, "--set", "webhook.tls.certManager.enabled=true",
                "--set", "webhook.tls.certManager.issuerRef.name=cluster-ca",
                "--set", "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
                "--api-versions", "cert-manager.io/v1"]
TLS_DIR = "/var/run/secrets/tailor.dev/webhook-tls"


def receiver(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = one(docs, "AlertmanagerConfig")["spec"]["receivers"][0]
    webhook: dict[str, Any] = config["webhookConfigs"][0]
    return webhook


def operator_settings(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    c = container(docs)
    for env in c["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], str(env["value"]))
    return parse([a for a in c["args"] if a.startswith("--webhook")])


def tls_volume(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    return next((v for v in pod["volumes"] if v["name"] == "webhook-tls"), None)


def test_without_a_certificate_the_webhook_is_plain_http(helm: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, *WEBHOOK)
    settings = operator_settings(docs, monkeypatch)
    assert settings.webhook_token_file and settings.webhook_tls_cert_file is None
    assert tls_volume(docs) is None
    assert receiver(docs)["url"] == "http://tailor.tailor-system.svc:8443/alerts"
    assert "tlsConfig" not in receiver(docs)["httpConfig"]
    port = one(docs, "Service")["spec"]["ports"][-1]
    assert (port["name"], port["appProtocol"]) == ("webhook", "http")
    assert not [d for d in docs if d["kind"] == "Certificate"]


def test_an_existing_secret_serves_https(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, *WEBHOOK, "--set", "webhook.tls.secretName=hook-tls",
                  "--set", "webhook.tls.caKey=")
    settings = operator_settings(docs, monkeypatch)
    assert (settings.webhook_tls_cert_file, settings.webhook_tls_key_file) == (
        f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key")
    volume = tls_volume(docs)
    assert volume is not None and volume["secret"] == {
        "secretName": "hook-tls", "items": [{"key": "tls.crt", "path": "tls.crt"},
                                            {"key": "tls.key", "path": "tls.key"}]}
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount == {"name": "webhook-tls", "mountPath": TLS_DIR, "readOnly": True}  # no subPath
    assert receiver(docs)["url"] == "https://tailor.tailor-system.svc:8443/alerts"
    assert "tlsConfig" not in receiver(docs)["httpConfig"]  # caKey "": Alertmanager's roots
    assert one(docs, "Service")["spec"]["ports"][-1]["appProtocol"] == "https"
    assert not [d for d in docs if d["kind"] == "Certificate"]


def test_cert_manager_issues_the_certificate_the_operator_mounts(helm: Path) -> None:
    docs = render(helm, *CERT_MANAGER)
    certificate = one(docs, "Certificate")
    spec = certificate["spec"]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert spec["secretName"] == "tailor-webhook-tls"
    assert spec["issuerRef"] == {"name": "cluster-ca", "kind": "ClusterIssuer",
                                 "group": "cert-manager.io"}
    # The name Alertmanager dials is one the certificate carries.
    assert "tailor.tailor-system.svc" in spec["dnsNames"]
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    volume = tls_volume(docs)
    assert volume is not None and volume["secret"]["secretName"] == "tailor-webhook-tls"
    assert receiver(docs)["url"] == "https://tailor.tailor-system.svc:8443/alerts"
    assert receiver(docs)["httpConfig"]["tlsConfig"] == {
        "ca": {"secret": {"name": "tailor-webhook-tls", "key": "ca.crt"}}}


def test_the_webhook_off_renders_no_certificate(helm: Path) -> None:
    docs = render(helm, "--set", "webhook.tls.certManager.enabled=true",
                  "--api-versions", "cert-manager.io/v1")
    assert not [d for d in docs if d["kind"] == "Certificate"] and tls_volume(docs) is None


@pytest.mark.parametrize(("values", "complaint"), [
    (CERT_MANAGER[:-2], "needs cert-manager: the cluster serves no cert-manager.io/v1"),
    ([*WEBHOOK, "--set", "webhook.tls.certManager.enabled=true", "--api-versions",
      "cert-manager.io/v1"], "needs webhook.tls.certManager.issuerRef.name"),
    ([*WEBHOOK, "--set", "webhook.tls.secretName=Not_A_Name"], "secretName"),
    ([*WEBHOOK, "--set", "webhook.tls.certificate=x"], "certificate"),
    ([*CERT_MANAGER, "--set", "webhook.tls.certManager.duration=90 days"], "duration"),
])
def test_bad_webhook_tls_values_are_refused_with_the_field_named(
        helm: Path, values: list[str], complaint: str) -> None:
    assert complaint in render_error(helm, *values)
