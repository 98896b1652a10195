"""The scoring signal: how a committed reply gets a scoring run, with one task message per run, not per reply.

Returned replies are scored and delivered in runs (grading.delivery.score_and_deliver_returned), not one task
per reply: under load, one run takes every reply waiting, with one statement for the lot. With a shared
cache (Redis), three keys keep it to one task message per run:

- ``FLAG`` is set while a run is working (or on its way): it will read again, so a reply committed now needs
  nothing. Whoever commits a reply sets the flag (``SET NX``) and does something only if it was not set.
- ``LISTENING`` is set while a run that found nothing waits for work instead of ending; a reply that sets the
  flag then pushes onto ``WAKE``, and the waiting run wakes at once (a blocking pop, no polling) and reads.
  Only when nobody listens does the reply send a new run.
- A run works with the flag set and reads again after every batch. Having found nothing, it clears the flag
  and listens, then reads once more; finding nothing again, it waits on ``WAKE`` for up to IDLE_SECONDS, and
  ends (atomically, only if nothing was pushed meanwhile) if nothing came. A reply committed while the flag
  was still set is read by that last look, one committed after it wakes the listening run, and one
  committed after the run ended rings for a new run.

A lost message or a dead worker leaves the flag set for at most FLAG_SECONDS (a working run refreshes it),
and the sweep finds the replies anyway.

Each process also remembers, for MEMORY seconds, that it found the flag set (or set it itself), and does
nothing for a reply within that time: under load a reply then costs no Redis round trip at all. A run waits
MEMORY between clearing the flag and its last look, so a reply that relied on the memory was committed before
that look: its process found the flag set at most MEMORY before the reply, and either the flag was set again
after the clear (a run is working, or woken, or on its way) or the last look is still ahead.

Without a shared cache there is no signal: every reply sends a run, and a run ends at its first short batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from grading import publish

logger = logging.getLogger("grading.lifecycle")

FLAG = "gradequeue:scoring-flag"
LISTENING = "gradequeue:scoring-listening"
WAKE = "gradequeue:scoring-wake"
FLAG_SECONDS = 10
MEMORY = 0.05
# How long a run that found nothing waits to be woken before it ends. Waiting costs nothing (a blocking pop);
# it spares a task message, a run's start and its first reads for every reply that comes within that time.
IDLE_SECONDS = 2.0
# Until when (time.monotonic()) this process may take the flag for set without asking Redis.
_known_until = 0.0

# A reply's signal, in one round trip: 0 the flag was set (a run will read again); 1 this call set it and woke
# the listening run (which now works, with the flag set); 2 this call set it and nobody listens: send a run.
_RING = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('EXPIRE', KEYS[3], ARGV[1])
  return 1
end
return 2
"""
# A run works: the flag set, not listening, and the pushes so far dropped (their replies were committed before
# its next read).
_HOLD = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""
# A run that found nothing stops working: replies from now on wake it (or ring for a new run).
_LISTEN = """
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return 1
"""
# A listening run ends only if nobody pushed since its last pop: 1 ended, 0 woken meanwhile.
_END = """
if redis.call('LLEN', KEYS[3]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""
# A run's message could not be sent: neither key may make later replies think a run is on its way or listening.
_CLEAR = """
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""
_scripts: dict[str, Any] = {}


def forget() -> None:
    """Drop this process's memory of the flag (after the shared cache was emptied, and between tests)."""
    global _known_until
    _known_until = 0.0


def _shared_cache() -> bool:
    from django.conf import settings

    return "redis" in str(settings.CACHES["default"]["BACKEND"]).lower()


class _Unavailable(Exception):
    pass


def _redis() -> tuple[Any, list[str]]:
    """The shared cache's Redis client and the three keys as the cache names them (its prefix and version).
    Raises _Unavailable while the cache is known to be down (grading.rediscache)."""
    from django.core.cache import cache

    from grading import rediscache

    if not rediscache.CACHE.allow():
        raise _Unavailable
    keys = [cache.make_and_validate_key(k) for k in (FLAG, LISTENING, WAKE)]
    return cache.client.get_client(write=True), keys  # type: ignore[attr-defined]


def _answered() -> None:
    from django.core.cache import cache

    from grading import rediscache

    if rediscache.CACHE.succeeded():
        cache.forget_stale()  # type: ignore[attr-defined]


def _call(script: str, *args: Any) -> int | None:
    """Run one of the scripts above; None when Redis cannot be reached (recorded as the cache's outage)."""
    from grading import rediscache

    try:
        client, keys = _redis()
        registered = _scripts.get(script)
        if registered is None:
            registered = _scripts[script] = client.register_script(script)
        result = registered(keys=keys, args=args, client=client)
    except _Unavailable:
        return None
    except rediscache.ERRORS as exc:
        rediscache.CACHE.failed(exc)
        return None
    _answered()
    return int(result)


def request_scoring(*, force: bool = False) -> None:
    """Ask for a scoring run, unless one is working, on its way, or listening (shared cache only). Never raises."""
    global _known_until
    signalled = _shared_cache()
    asked_at = time.monotonic()
    rang = False  # this call set the flag: if the run's message goes out, the flag is known to be set
    if signalled and not force:
        if asked_at < _known_until:
            return
        answer = _call(_RING, FLAG_SECONDS)
        if answer in (0, 1):
            _known_until = asked_at + MEMORY
            return
        # 2: nobody will read; None: no signal (Redis unreachable), so send the run anyway.
        rang = answer == 2
    if not publish.score_run():
        # The sweep will ask for the run; the flag must not make later replies think one is on its way.
        if signalled:
            _call(_CLEAR)
        return
    if rang:
        _known_until = asked_at + MEMORY


def _unheard(left: float) -> None:
    # Without Redis nothing can be heard, but the wait for replies relying on the memory must still elapse.
    time.sleep(max(0.0, min(left, MEMORY)))


class RunSignal:
    """A scoring run's side of the signal (grading.delivery): hold the flag while working, listen when idle."""

    def __init__(self) -> None:
        self.held_at = 0.0

    def hold(self) -> bool:
        """Set the flag for FLAG_SECONDS (as a run starts, or resumes after its last look found work), so that
        replies committed while the run works rely on it. False when there is no signal to hold."""
        if not _shared_cache():
            return False
        if _call(_HOLD, FLAG_SECONDS) is None:
            logger.warning("scoring signal unavailable; this run stops at its first short batch")
            return False
        self.held_at = time.monotonic()
        return True

    def refresh(self) -> bool:
        """Keep the flag set while a long run works (every FLAG_SECONDS / 2). False if it could not be."""
        if time.monotonic() - self.held_at > FLAG_SECONDS / 2:
            return self.hold()
        return True

    def listen(self) -> bool:
        """Clear the flag and listen: replies committed from now on wake this run or ring for a new one. False
        when Redis did not answer (the run then ends after its last look)."""
        return _call(_LISTEN, int(IDLE_SECONDS) + FLAG_SECONDS) == 1

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a reply's push; True if one came (its sender set the flag again)."""
        from grading import rediscache

        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left < 0.001:  # Redis reads a timeout of 0 as "forever"
                return False
            try:
                client, keys = _redis()
                # Blocking pops in steps within the socket timeout, which bounds every call to Redis.
                timeout = client.connection_pool.connection_kwargs.get("socket_timeout") or 0.5
                popped = client.blpop([keys[2]], timeout=round(min(0.25, timeout / 2, left), 3))
            except _Unavailable:
                _unheard(left)
                return False
            except rediscache.ERRORS as exc:
                rediscache.CACHE.failed(exc)
                _unheard(left)
                return False
            _answered()
            if popped is not None:
                self.held_at = time.monotonic()
                return True

    def end(self) -> bool:
        """Stop listening, unless a push came since the last wait: True if the run may end."""
        return _call(_END) != 0
