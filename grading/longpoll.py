"""get_submission's long poll: a request that finds its queue empty waits briefly for work to arrive.

A grader then gets a new submission as soon as it is submitted instead of after its next sleep
(``GRADEQUEUE["EMPTY_POLL_WAIT"]``). A waiting request holds a web thread, so at most ``EMPTY_POLL_WAITERS``
requests of one process wait at once, and none while every web thread of the process (``WEB_THREADS``) has an
XQueue request; the others answer at once. The XQueue views count their requests with ``in_progress``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.db import connection

from grading import lifecycle, outage
from grading.conf import setting

# How often a waiting request looks for new work: an index-only look-up, not a lease attempt.
STEP = 0.02

# XQueue requests in progress in this process, and those of them holding an empty get_submission.
_in_progress = 0
_waiting = 0
# How many times a request took the last free web thread of this process.
_crowded = 0
_lock = threading.Lock()


@contextlib.contextmanager
def in_progress() -> Iterator[None]:
    """Count an XQueue request of this process while it is served (the XQueue views' dispatch)."""
    global _in_progress, _crowded
    with _lock:
        _in_progress += 1
        if _in_progress >= int(setting("WEB_THREADS")):
            _crowded += 1  # seen by waiting polls however briefly every thread was taken
    try:
        yield
    finally:
        with _lock:
            _in_progress -= 1


def waiting() -> int:
    """How many get_submission requests of this process are in their wait now."""
    return _waiting


def lease(queue: Any, user: Any) -> lifecycle.Lease | None:
    """Lease the next submission of ``queue`` to ``user``, waiting up to EMPTY_POLL_WAIT seconds for one."""
    found = lifecycle.lease_next(queue, user)
    if found is None:
        found = _wait_for_work(queue, user, float(setting("EMPTY_POLL_WAIT")))
    return found


def _wait_for_work(queue: Any, user: Any, wait: float) -> lifecycle.Lease | None:
    """Hold an empty get_submission for up to ``wait`` seconds, leasing the first submission that arrives.

    None waits, and a waiting one answers at once, while every web thread of the process has a request: more
    may be queued behind them, graders with work among them. With 240 idle graders polling beside 16 working
    ones, waits that kept their threads took the working graders from 28 to 11 grades a second
    (bench/scale_load.py).
    """
    global _waiting
    if wait <= 0:
        return None
    threads = int(setting("WEB_THREADS"))
    with _lock:
        if _waiting >= int(setting("EMPTY_POLL_WAITERS")) or _in_progress >= threads:
            return None
        _waiting += 1
        crowded = _crowded
    try:
        deadline = time.monotonic() + wait
        error: Exception | None = None
        while time.monotonic() < deadline and _crowded == crowded:
            time.sleep(min(STEP, max(0.0, deadline - time.monotonic())))
            try:
                if lifecycle.queue_length(queue.pk, limit=1):
                    found = lifecycle.lease_next(queue, user)
                    if found is not None:
                        return found
                error = None
            except outage.DATABASE_CONNECTION_ERRORS as exc:
                # A dropped connection (a database restart, a proxy cut) must not end the wait: drop it, and
                # the next look opens a new one. Only an error that lasts to the end is the reply.
                error = exc
                connection.close()
        if error is not None:
            raise error
        return None
    finally:
        with _lock:
            _waiting -= 1
