"""Throttling failed logins, per account and per client address, in Django's cache.

Each counter lives for a fixed window that starts at its first failure; once an account (or an address)
has failed ``LOGIN_FAILURES_PER_ACCOUNT`` (``LOGIN_FAILURES_PER_ADDRESS``) times in the window, further
logins are refused without checking the password until the window ends. Nothing is ever locked for good:
the counters simply expire. A successful login clears its account's counter, not its address's (an
attacker holding one valid account must not be able to reset the address counter between guesses).

The counters are as shared as the cache is: with several web processes, set ``CACHE_URL`` to Redis.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from django.core.cache import cache

from grading.conf import setting

PREFIX = "gradequeue:login-failures"


def _key(kind: str, value: str) -> str:
    # Hashed: user names and addresses may hold characters some cache backends refuse in keys.
    return f"{PREFIX}:{kind}:{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


def client_address(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or the last hop of LOGIN_CLIENT_ADDRESS_HEADER behind a proxy."""
    header = str(setting("LOGIN_CLIENT_ADDRESS_HEADER") or "")
    if header:
        meta_name = "HTTP_" + header.upper().replace("-", "_")
        forwarded = [part.strip() for part in str(request.META.get(meta_name, "")).split(",") if part.strip()]
        if forwarded:
            # The proxy appends the address it saw; anything before it was written by the client.
            return forwarded[-1]
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _counters(username: str, address: str) -> list[tuple[str, int]]:
    return [
        (_key("account", username.strip().lower()), int(setting("LOGIN_FAILURES_PER_ACCOUNT"))),
        (_key("address", address), int(setting("LOGIN_FAILURES_PER_ADDRESS"))),
    ]


def retry_after(username: str, address: str) -> int:
    """Seconds until a login for ``username`` from ``address`` may be tried again; 0 when it may now."""
    wait = 0
    now = time.time()
    for key, limit in _counters(username, address):
        values = cache.get_many([key, key + ":reset"])
        count, reset_at = values.get(key), values.get(key + ":reset")
        if count is not None and reset_at is not None and int(count) >= limit:
            wait = max(wait, math.ceil(float(reset_at) - now), 1)
    return wait


def record_failure(username: str, address: str) -> None:
    window = int(setting("LOGIN_THROTTLE_SECONDS"))
    reset_at = time.time() + window
    for key, _limit in _counters(username, address):
        # add() only starts a window if none is open: later failures do not extend it.
        cache.add(key + ":reset", reset_at, window)
        cache.add(key, 0, window)
        try:
            cache.incr(key)
        except ValueError:  # the window ended between add() and incr()
            cache.set(key, 1, window)
            cache.set(key + ":reset", reset_at, window)


def record_success(username: str) -> None:
    key = _key("account", username.strip().lower())
    cache.delete_many([key, key + ":reset"])


def message(seconds: int) -> str:
    return f"Too many failed logins; try again in {seconds} seconds"
