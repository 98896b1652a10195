"""Readiness: can this process reach the database and the broker right now, and is the cache answering?

``/xqueue/status/`` answers "the web process is up" as the protocol wants (load balancers and old
clients call it); readiness goes further and tells an orchestrator, or an operator, which dependency is
failing. The cache is not required: without it gradequeue works, more slowly, so it shows as degraded.

The answer is kept for ``READY_CACHE_SECONDS``: a load balancer or a curl loop asking many times a second
costs one database query and one broker connection per process per that period, not per request.
"""

from __future__ import annotations

import os
import threading
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
    # A required dependency that fails makes the process not ready; any other only degrades it.
    required: bool = True


def _timed(name: str, probe: Callable[[], str], required: bool = True) -> Check:
    started = time.monotonic()
    try:
        detail = probe()
        ok = True
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
    return Check(name, ok, detail, int((time.monotonic() - started) * 1000), required)


def _database() -> str:
    timeout_ms = int(float(setting("READY_TIMEOUT")) * 1000)
    with transaction.atomic(), connection.cursor() as cursor:
        # A database that accepts the connection but hangs must not hang the probe too.
        if connection.vendor == "postgresql":
            cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
            cursor.execute("SELECT 1")
        elif connection.vendor == "mysql" and connection.mysql_is_mariadb:  # type: ignore[attr-defined]
            cursor.execute(f"SET STATEMENT max_statement_time = {timeout_ms / 1000} FOR SELECT 1")
        elif connection.vendor == "mysql":
            cursor.execute(f"SELECT /*+ MAX_EXECUTION_TIME({timeout_ms}) */ 1")
        else:
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


def _cache() -> str:
    from django.core.cache import caches

    from grading import rediscache

    cache = caches["default"]
    if not isinstance(cache, rediscache.ResilientRedisCache):
        return "local"  # the process's own memory: nothing to reach
    cache.get("gradequeue:ready-probe")  # never raises; an unreachable Redis marks the outage
    state = rediscache.CACHE.state()
    if state["down"]:
        raise ConnectionError(f"unavailable for {state['seconds']} s: {state['last_error']}")
    return "ok"


_lock = threading.Lock()
_last: tuple[float, list[Check]] = (0.0, [])


def readiness(max_age: float | None = None) -> list[Check]:
    """Check the database, the broker and the cache; each result says what failed and how long it took.

    A result younger than ``max_age`` seconds (default READY_CACHE_SECONDS) is answered again; concurrent
    callers wait for one check instead of each running their own.
    """
    global _last
    age = float(setting("READY_CACHE_SECONDS")) if max_age is None else max_age
    with _lock:
        checked_at, checks = _last
        if checks and time.monotonic() - checked_at < age:
            return checks
        checks = [_timed("database", _database), _timed("broker", _broker), _timed("cache", _cache, required=False)]
        _last = (time.monotonic(), checks)
        return checks


def forget() -> None:
    """Drop the kept answer (tests, after changing what the checks reach)."""
    global _last
    with _lock:
        _last = (0.0, [])
