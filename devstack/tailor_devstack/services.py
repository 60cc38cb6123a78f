"""Configuration of the services around the control plane: MinIO, Prometheus, Alertmanager.

Prometheus reads scrape targets from `prometheus/targets/*.json` (file service discovery) and
rules from `prometheus/rules/*.yml`; Alertmanager's routes are composed from
`alertmanager/receivers/*.yml`. Tests and the demo write files there and call `reload`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import requests
import yaml
from botocore.exceptions import ClientError

SCRAPE_INTERVAL = "2s"


def ensure_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, region_name="us-east-1")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def write_prometheus_config(directory: Path, alertmanager_url: str) -> Path:
    for sub in ("targets", "rules", "data"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(directory / "rules" / "*.yml")],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}]},
        "scrape_configs": [{
            "job_name": "tailor",
            "file_sd_configs": [{"files": [str(directory / "targets" / "*.json")],
                                 "refresh_interval": SCRAPE_INTERVAL}],
        }],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_alertmanager_config(directory: Path) -> Path:
    """Compose alertmanager.yml from the receiver fragments.

    Each fragment is `{receiver: <an Alertmanager receiver>, matchers: [<matcher>, ...]}`;
    alerts that no fragment matches go to a receiver that drops them.
    """
    (directory / "receivers").mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    receivers: list[dict[str, Any]] = [{"name": "drop"}]
    routes = []
    for fragment_file in sorted((directory / "receivers").glob("*.yml")):
        fragment = yaml.safe_load(fragment_file.read_text())
        receivers.append(fragment["receiver"])
        routes.append({"receiver": fragment["receiver"]["name"],
                       "matchers": fragment.get("matchers", []), "continue": True})
    config = {
        "route": {"receiver": "drop", "group_by": ["alertname", "namespace", "monitor"],
                  "group_wait": "1s", "group_interval": "5s", "repeat_interval": "1h",
                  "routes": routes},
        "receivers": receivers,
    }
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def reload(url: str) -> None:
    """Ask Prometheus or Alertmanager to re-read its configuration (fails loudly if invalid)."""
    response = requests.post(f"{url}/-/reload", timeout=10)
    response.raise_for_status()
