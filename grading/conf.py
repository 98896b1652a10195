"""Access to the GRADEQUEUE settings dict, with defaults, and per-queue overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "LEASE_SECONDS": 300,
    "MAX_ATTEMPTS": 3,
    "DELIVERY_BACKOFF_BASE": 2.0,
    "DELIVERY_BACKOFF_CAP": 600.0,
    "DELIVERY_HORIZON": 6 * 3600.0,
    "DELIVERY_TIMEOUT": 10.0,
    "SCORE_BATCH": 100,
    "EMPTY_POLL_WAIT": 0.0,
    "EMPTY_POLL_WAITERS": 2,
    "SWEEP_BATCH": 500,
    "SWEEP_GRACE_SECONDS": 30.0,
    "MAX_FILES": 20,
    "MAX_FILE_BYTES": 10 * 1024 * 1024,
    "FILE_URL_SECONDS": 24 * 3600,
    "SEED_QUEUES": [],
    "PUBLIC_BASE_URL": "",
    "METRICS_TOKEN": "",
    # Closed unless configured: config.settings fills in loopback for development.
    "METRICS_ALLOWED_NETWORKS": [],
    "DEVELOPMENT": False,
    "READY_TIMEOUT": 2.0,
    "READY_CACHE_SECONDS": 1.5,
    "BROKER_RETRY_SECONDS": 5.0,
    "SAMPLE_RETENTION_SECONDS": 24 * 3600,
    "LOGIN_CACHE_SECONDS": 600,
    # Closed unless configured: config.settings fills in loopback for development.
    "CALLBACK_HOSTS": [],
    "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": 10,
    "LOGIN_FAILURES_PER_ADDRESS": 50,
    "CREDENTIAL_KEY": "",
    "ENCRYPTION_KEY": "",
    "LOGIN_THROTTLE_SECONDS": 900,
    "LOGIN_CLIENT_ADDRESS_HEADER": "",
    "PUSH_HTTP_TIMEOUT": 30.0,
    "PUSH_HTTP_ATTEMPTS": 5,
    "PUSH_HTTP_BACKOFF_BASE": 2.0,
    "PUSH_HTTP_BACKOFF_CAP": 60.0,
    "PUSH_DISPATCH_BATCH": 200,
    "ACCESS_CACHE_SECONDS": 60.0,
    "LOCAL_CACHE_SECONDS": 5.0,
}


def setting(name: str) -> Any:
    """One GRADEQUEUE value; read on every call so that tests' settings overrides apply."""
    overrides = getattr(settings, "GRADEQUEUE", {})
    if name in overrides:
        return overrides[name]
    return DEFAULTS[name]


@dataclass(frozen=True)
class QueuePolicy:
    lease_seconds: int


def policy_for(queue: Any) -> QueuePolicy:
    # A queue's maximum attempts (Queue.max_attempts, else MAX_ATTEMPTS) is read where it is decided:
    # lifecycle.reclaim_expired, over many queues at once.
    return QueuePolicy(lease_seconds=queue.lease_seconds or setting("LEASE_SECONDS"))
