"""The shared cache (Redis): it makes gradequeue faster, and its outage only makes it slower.

django-redis's backend (which keeps one client per connection pool, so a cache call costs no client set-up),
with every call guarded: while Redis cannot be reached, reads miss (callers fall back to the database),
writes are dropped, and ``incr``/``decr`` raise ``ValueError`` as for a missing key, so no caller ever sees a
Redis error. django-redis's own ``IGNORE_EXCEPTIONS`` does the same per call but logs each one and tries
Redis every time; here:

- after a failure, calls skip Redis for ``RETRY_SECONDS`` (then one call tries again), so an unreachable or
  hung Redis costs each request nothing instead of a connect timeout per call (``SOCKET_CONNECT_TIMEOUT``
  and ``SOCKET_TIMEOUT`` bound the calls that do try);
- the outage is logged once when it starts and once when it ends, with the number of calls it cost
  (``grading.outage``);
- every key written or deleted while Redis was unreachable is deleted again when it answers, so that an
  entry made stale meanwhile (a session logged out, a grant revoked) is not served afterwards. (Per process:
  a process that dies during the outage cannot do that; its stale entries live until they expire.)

The state is the process's: each web or worker process finds out and logs by itself.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django_redis.cache import RedisCache as DjangoRedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from grading.outage import Outage

logger = logging.getLogger("grading.cache")

CACHE = Outage(
    "cache (Redis)",
    logger,
    retry_seconds=2.0,
    consequence="sessions, accounts, grants and password checks go to the database",
)
ERRORS = (RedisError, ConnectionInterrupted, OSError)

# Keys to delete once Redis answers again: written or deleted while it could not be reached.
MAX_PENDING = 10_000
_pending: set[tuple[str, Any]] = set()
_pending_overflow = 0
_pending_lock = threading.Lock()


def _remember(keys: Iterable[Any], version: Any) -> None:
    global _pending_overflow
    with _pending_lock:
        for key in keys:
            if len(_pending) >= MAX_PENDING:
                _pending_overflow += 1
            else:
                _pending.add((str(key), version))


def _keys_of(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    first = args[0] if args else kwargs.get("keys", kwargs.get("data", kwargs.get("key")))
    if name in ("set_many", "delete_many"):
        return list(first or ())
    return [first]


def _missing(name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    def fallback(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == "get":
            return kwargs.get("default", args[1] if len(args) > 1 else None)
        if name == "get_many":
            return {}
        if name == "set_many":
            return list(args[0] if args else kwargs.get("data", ()))
        if name in ("incr", "decr"):
            raise ValueError("the cache is unavailable")
        if name == "delete_many":
            return 0
        if name == "clear":
            return None
        return False  # set, add, delete, touch, has_key: not done

    return fallback


READS = ("get", "get_many", "has_key", "clear")
WRITES = ("set", "add", "delete", "delete_many", "set_many", "incr", "decr", "touch")


def _guarded(name: str) -> Callable[..., Any]:
    call = getattr(DjangoRedisCache, name)
    fallback = _missing(name)
    writes = name in WRITES

    @functools.wraps(call)
    def guarded(self: ResilientRedisCache, *args: Any, **kwargs: Any) -> Any:
        if not CACHE.allow():
            if writes:
                _remember(_keys_of(name, args, kwargs), kwargs.get("version"))
            return fallback(args, kwargs)
        try:
            result = call(self, *args, **kwargs)
        except ERRORS as exc:
            CACHE.failed(exc)
            if writes:
                _remember(_keys_of(name, args, kwargs), kwargs.get("version"))
            return fallback(args, kwargs)
        if CACHE.succeeded():
            self.forget_stale()
        return result

    return guarded


class ResilientRedisCache(DjangoRedisCache):
    """``CACHES = {"default": {"BACKEND": "grading.rediscache.ResilientRedisCache", "LOCATION": "redis://…",
    "OPTIONS": {"RETRY_SECONDS": 2.0, "SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.5}}}``"""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        CACHE.retry_seconds = float(options.pop("RETRY_SECONDS", CACHE.retry_seconds))
        options.pop("IGNORE_EXCEPTIONS", None)  # guarded here, with one log line per outage
        super().__init__(server, {**params, "OPTIONS": options})

    def forget_stale(self) -> None:
        """Delete the keys written or deleted while Redis could not be reached (it answers again)."""
        global _pending_overflow
        with _pending_lock:
            pending, overflow = list(_pending), _pending_overflow
            _pending.clear()
            _pending_overflow = 0
        by_version: dict[Any, list[str]] = {}
        for key, version in pending:
            by_version.setdefault(version, []).append(key)
        try:
            for version, keys in by_version.items():
                DjangoRedisCache.delete_many(self, keys, version=version)
        except ERRORS as exc:
            CACHE.failed(exc)
            with _pending_lock:
                _pending.update(pending)
            return
        if pending or overflow:
            logger.info(
                "cache: deleted %d keys written while it was unavailable%s",
                len(pending),
                f"; {overflow} more could not be remembered and live until they expire" if overflow else "",
            )


for _name in (*READS, *WRITES):
    setattr(ResilientRedisCache, _name, _guarded(_name))


def reset() -> None:
    """Forget any outage and the keys waiting to be deleted (tests)."""
    global _pending_overflow
    CACHE.reset()
    with _pending_lock:
        _pending.clear()
        _pending_overflow = 0


def degraded() -> bool:
    """Is the shared cache unreachable, as far as this process knows?"""
    return CACHE.down
