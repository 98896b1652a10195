"""Outages of the services gradequeue depends on: one log line when one starts, one when it ends.

A dependency that is down (the database, the cache, the broker) fails every request that touches it; logging
each failure, let alone with a traceback, buries the one line an operator needs under hundreds. An
``Outage`` logs the first failure (with its error), a reminder every ``REMIND_SECONDS`` while it lasts, and
on the first success a line saying how long it lasted and how many calls it cost.

With ``retry_seconds`` it is also a circuit breaker: after a failure, callers skip the dependency
(``allow()`` is False) for that long instead of each paying a connection timeout, then one call tries again.
pybreaker, the maintained library for this, holds one lock for the whole guarded call, which would
serialise every cache round trip of a web process's threads; this takes a lock only while something is down.

Every process keeps its own state: each web or worker process logs an outage once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import InterfaceError, OperationalError

REMIND_SECONDS = 60.0


class Outage:
    def __init__(self, name: str, logger: logging.Logger, *, retry_seconds: float = 0.0, consequence: str = "") -> None:
        self.name = name
        self.logger = logger
        self.retry_seconds = retry_seconds
        self.consequence = consequence
        self._lock = threading.Lock()
        self._since: float | None = None  # time.monotonic() of the first failure; None while all is well
        self._retry_at = 0.0
        self._probing = False
        self._calls = 0  # calls that failed or were skipped during this outage
        self._reminded_at = 0.0
        self.last_error = ""

    @property
    def down(self) -> bool:
        return self._since is not None

    def allow(self) -> bool:
        """May the caller try the dependency now? Always while it is up; while it is down, one caller at a
        time once ``retry_seconds`` have passed since the last failure (the others are counted and skip)."""
        if self._since is None:
            return True
        with self._lock:
            if self._since is None:
                return True
            if not self._probing and time.monotonic() >= self._retry_at:
                self._probing = True
                return True
            self._calls += 1
            return False

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        error = f"{type(exc).__name__}: {exc}"[:300]
        with self._lock:
            self._probing = False
            self._retry_at = now + self.retry_seconds
            self._calls += 1
            self.last_error = error
            if self._since is None:
                self._since = self._reminded_at = now
                self.logger.warning(
                    "%s unavailable: %s%s; further failures are counted, not logged, until it answers again",
                    self.name,
                    error,
                    f" ({self.consequence})" if self.consequence else "",
                )
            elif now - self._reminded_at >= REMIND_SECONDS:
                self._reminded_at = now
                self.logger.warning(
                    "%s still unavailable after %.0f s: %d calls failed or skipped so far; last error %s",
                    self.name,
                    now - self._since,
                    self._calls,
                    error,
                )

    def succeeded(self) -> bool:
        """Record a call that worked. True when this ended an outage."""
        if self._since is None:
            return False
        with self._lock:
            if self._since is None:
                return False
            lasted, calls = time.monotonic() - self._since, self._calls
            self._since, self._probing, self._calls = None, False, 0
        self.logger.warning(
            "%s available again after %.1f s; %d calls failed or skipped meanwhile", self.name, lasted, calls
        )
        return True

    def state(self) -> dict[str, Any]:
        since = self._since
        return {
            "down": since is not None,
            "seconds": round(time.monotonic() - since, 1) if since is not None else 0.0,
            "calls": self._calls,
            "last_error": self.last_error if since is not None else "",
        }

    def reset(self) -> None:
        """Forget any outage without logging (tests, and a process that starts afresh)."""
        with self._lock:
            self._since, self._probing, self._calls, self._retry_at = None, False, 0, 0.0


# The database: XQueue calls that hit a database error answer the failure envelope (grading.api.views).
database = Outage(
    "database",
    logging.getLogger("grading.database"),
    consequence="XQueue calls that need it answer the failure envelope",
)
# The errors of a database that cannot be reached or dropped the connection (as opposed to one that refused a
# value: DataError, IntegrityError, which are the request's own problem).
DATABASE_CONNECTION_ERRORS = (OperationalError, InterfaceError)

# The broker, for grading.publish: a publish that fails leaves the work to the periodic sweep (the database is
# the record), so while the broker is unreachable publishes are skipped for BROKER_RETRY_SECONDS instead of
# each request paying the connection timeout (twice, with the publish retry).
broker = Outage(
    "broker",
    logging.getLogger("grading.broker"),
    retry_seconds=5.0,
    consequence="task messages are not sent; the periodic sweep sends the work once it answers",
)
