"""A tiny per-process cache with expiry, in front of Django's cache for the hottest look-ups.

A polling grader's every request needs its session, its account and its queue grants. Even from Redis that
is three network round trips per request; on a busy machine each round trip costs far more than the work it
fetches. This keeps the answers in the process for a few seconds (``LOCAL_CACHE_SECONDS``): a change made in
this process is forgotten at once, and one made elsewhere is seen within that many seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from grading.conf import setting

_MISSING = object()
_entries: dict[str, tuple[float, Any]] = {}
_lock = threading.Lock()
MAX_ENTRIES = 10_000


def get(key: str) -> Any:
    """The value stored under ``key`` if it has not expired, else None."""
    entry = _entries.get(key)
    if entry is None:
        return None
    if entry[0] < time.monotonic():
        _entries.pop(key, None)
        return None
    return entry[1]


def put(key: str, value: Any) -> None:
    ttl = float(setting("LOCAL_CACHE_SECONDS"))
    if ttl <= 0:
        return
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[key] = (time.monotonic() + ttl, value)


def forget(*keys: str) -> None:
    for key in keys:
        _entries.pop(key, None)


def clear() -> None:
    _entries.clear()
