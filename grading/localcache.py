"""A tiny per-process cache with expiry, in front of Django's cache for the hottest look-ups.

A polling grader's every request needs its session, its account and its queue grants. Even from Redis that
is three network round trips per request; on a busy machine each round trip costs far more than the work it
fetches. This keeps the answers in the process for a few seconds (``LOCAL_CACHE_SECONDS``): a change made in
this process is forgotten at once, and one made elsewhere is seen within that many seconds.

The store is cachetools' ``TLRUCache``: each entry expires ``LOCAL_CACHE_SECONDS`` (read when it is stored)
after it was put, and when full the least recently used entry makes room. cachetools' caches are not
thread-safe (a read reorders and expires entries), so every call holds one lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cachetools import TLRUCache

from grading.conf import setting

MAX_ENTRIES = 10_000


def _expires(_key: str, _value: Any, now: float) -> float:
    return now + float(setting("LOCAL_CACHE_SECONDS"))


# The clock is looked up at each call, so that a test can move time.monotonic.
_entries: TLRUCache[str, Any] = TLRUCache(MAX_ENTRIES, ttu=_expires, timer=lambda: time.monotonic())
_lock = threading.Lock()


def get(key: str) -> Any:
    """The value stored under ``key`` if it has not expired, else None."""
    with _lock:
        return _entries.get(key)


def put(key: str, value: Any) -> None:
    if float(setting("LOCAL_CACHE_SECONDS")) <= 0:
        return
    with _lock:
        _entries[key] = value


def forget(*keys: str) -> None:
    with _lock:
        for key in keys:
            _entries.pop(key, None)


def clear() -> None:
    with _lock:
        _entries.clear()
