"""How ``/xqueue/login/`` decides: the throttle, one shared check per set of credentials, API accounts only.

A watcher starts all its threads at once, and each logs in with the same credentials. Concurrent logins of
one process with the same user name, password and client address share a single check (single-flight): the
first does it, the others wait for its answer instead of each reserving a throttle slot and hashing the
password again. With a person's password (PBKDF2) that turns eight or 32 slow hashes into one; with a
machine secret (``grading.credentials``) the check is fast anyway, and sharing it keeps a burst of logins
from one address from filling the throttle's counters with slots held at the same moment.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth import authenticate

from grading import throttle
from grading.api.auth import is_api_account
from grading.auth_backends import copy_user

T = TypeVar("T")


class SingleFlight:
    """Calls with the same key that overlap in time run once; every caller gets that run's result.

    (A few lines on ``concurrent.futures.Future``: the single-flight packages on PyPI are young one-person
    projects, more to vet than this is to read.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[bytes, tuple[Future[Any], list[int]]] = {}

    def do(self, key: bytes, fn: Callable[[], T]) -> tuple[T, bool]:
        """``fn()``'s result, and whether it was shared from a run another caller started."""
        with self._lock:
            running = self._running.get(key)
            if running is None:
                mine: Future[Any] = Future()
                self._running[key] = (mine, [0])
            else:
                running[1][0] += 1
        if running is not None:
            return running[0].result(), True
        try:
            result = fn()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(result)
            return result, False
        finally:
            with self._lock:
                del self._running[key]

    def sharing(self) -> int:
        """How many callers are waiting for a run another caller started (for tests and debugging)."""
        with self._lock:
            return sum(joined[0] for _, joined in self._running.values())


_flights = SingleFlight()
# Keys in the table of running checks are keyed digests, never the credentials themselves.
_FLIGHT_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class Outcome:
    user: Any  # the account, when the credentials are right and it may use the API
    wait: int  # > 0: refused by the throttle, unchecked


def _check(username: str, password: str, address: str) -> Outcome:
    reservation = throttle.reserve(username, address)
    if isinstance(reservation, int):
        return Outcome(None, reservation)
    try:
        user = authenticate(None, username=username, password=password)
    except BaseException:
        reservation.cancel()
        raise
    if user is None or not is_api_account(user):  # staff accounts act only in the admin
        reservation.failed()
        return Outcome(None, 0)
    reservation.succeeded()
    return Outcome(user, 0)


def check(username: str, password: str, address: str) -> Outcome:
    """Whether ``username`` may log in with ``password`` from ``address`` (see the module docstring)."""
    key = hmac.new(_FLIGHT_KEY, f"{username}\0{password}\0{address}".encode("utf-8", "surrogatepass"), hashlib.sha256)
    outcome, shared = _flights.do(key.digest(), lambda: _check(username, password, address))
    if shared and outcome.user is not None:
        # Each request logs in its own copy (login() writes last_login and the session's user on it).
        return Outcome(copy_user(outcome.user), 0)
    return outcome
