"""Deterministic names of the objects Tailor creates; the CRDs' name limits derive from these."""

from __future__ import annotations

import hashlib

from tailor_contract.constants import (
    PROMOTE_JOB_SUFFIX,
    RETRAIN_HASH_LENGTH,
    RETRAIN_INFIX,
    TRIAL_INFIX,
    WORKER_JOB_SUFFIX,
)


def service_name(trainingjob: str) -> str:
    """The headless Service that gives worker pods stable DNS names."""
    return trainingjob


def worker_job_name(trainingjob: str) -> str:
    """The Indexed Job running the worker group."""
    return f"{trainingjob}{WORKER_JOB_SUFFIX}"


def promote_job_name(trainingjob: str) -> str:
    """The Job that promotes a run a person approved. Deterministic, so an approval seen twice
    (or after a restart) creates one Job; TrainingJob names are at most 52 characters, so this
    fits a Job name's 63."""
    return f"{trainingjob}{PROMOTE_JOB_SUFFIX}"


def worker_hostname(trainingjob: str, index: int) -> str:
    """Host name of worker ``index`` (the Indexed Job's ``<job>-<index>``)."""
    return f"{worker_job_name(trainingjob)}-{index}"


def trial_group_name(trainingjob: str, number: int) -> str:
    """Trial ``number``'s worker group: its Indexed Job and its headless Service."""
    return f"{trainingjob}{TRIAL_INFIX}{number}"


def trial_hostname(trainingjob: str, number: int, index: int) -> str:
    """Host name of worker ``index`` of trial ``number``."""
    return f"{trial_group_name(trainingjob, number)}-{index}"


def retrain_job_name(driftmonitor: str, trigger_id: str) -> str:
    """The TrainingJob a DriftMonitor creates for one trigger.

    The hash of the trigger's identity (e.g. the window end and the reason, or an alert's
    fingerprint) makes the name deterministic, so a retried or restarted check creates the
    same object again and the API server's AlreadyExists stops a duplicate.
    """
    digest = hashlib.sha256(trigger_id.encode()).hexdigest()[:RETRAIN_HASH_LENGTH]
    return f"{driftmonitor}{RETRAIN_INFIX}{digest}"


def production_data_uri(output_uri: str, model: str, trainingjob: str) -> str:
    """The labelled production examples a DriftMonitor folds into retrain ``trainingjob``:
    beside the model's runs and test manifest (``<output>/<model>/``), one object per retrain,
    so a restarted operator writes the same object again."""
    return f"{output_uri.rstrip('/')}/{model}/production-data/{trainingjob}.parquet"
