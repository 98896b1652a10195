"""Readiness: can this process reach the database and the broker right now?

``/xqueue/status/`` answers "the web process is up" as the protocol wants (load balancers and old
clients call it); readiness goes further and tells an orchestrator, or an operator, which dependency is
failing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from grading.conf import setting


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    duration_ms: int


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.monotonic()
    try:
        detail = probe()
        ok = True
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
    return Check(name, ok, detail, int((time.monotonic() - started) * 1000))


def _database() -> str:
    timeout_ms = int(float(setting("READY_TIMEOUT")) * 1000)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A database that accepts the connection but hangs must not hang the probe too.
            cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _broker() -> str:
    from kombu import Connection

    url = settings.CELERY_BROKER_URL
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    timeout = float(setting("READY_TIMEOUT"))
    if url.startswith("filesystem://"):
        # The development transport has no server: it is ready when its folder can be written.
        folder = options.get("data_folder_in", "")
        if not folder or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise OSError(f"broker folder {folder!r} is missing or not writable")
        return "ok"
    with Connection(url, connect_timeout=timeout, transport_options=options) as conn:
        # One try, bounded by the timeout: readiness is asked often and must answer fast.
        conn.ensure_connection(max_retries=0, timeout=timeout)  # type: ignore[arg-type]
    return "ok"


def readiness() -> list[Check]:
    """Check the database and the broker; each result says what failed and how long it took."""
    return [_timed("database", _database), _timed("broker", _broker)]
