"""Access to the GRADEQUEUE settings dict (config/settings.py), and per-queue overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def setting(name: str) -> Any:
    """One GRADEQUEUE value; read on every call so that tests' settings overrides apply.

    Every default is written once, in ``config/settings.py``'s ``GRADEQUEUE`` dict, next to the environment
    variable that sets it and the comment that explains it.
    """
    try:
        return settings.GRADEQUEUE[name]
    except (AttributeError, KeyError):
        raise ImproperlyConfigured(f"GRADEQUEUE[{name!r}] is not set (config/settings.py defines every key)") from None


@dataclass(frozen=True)
class QueuePolicy:
    lease_seconds: int


def policy_for(queue: Any) -> QueuePolicy:
    # A queue's maximum attempts (Queue.max_attempts, else MAX_ATTEMPTS) is read where it is decided:
    # lifecycle.reclaim_expired, over many queues at once.
    return QueuePolicy(lease_seconds=queue.lease_seconds or setting("LEASE_SECONDS"))
