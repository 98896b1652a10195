"""Throttling failed logins so that a guesser cannot lock out the real client.

Failures are counted per (account, client address) pair and per client address, as django-axes' combined
lockout parameters ``[["username", "ip_address"], "ip_address"]`` do:

- ``LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS`` failures of one account from one address make that account wait,
  *from that address only*: a guesser elsewhere never locks the real LMS or grader out of its own account;
- ``LOGIN_FAILURES_PER_ADDRESS`` failures from one address, across all accounts, make that address wait (the
  ceiling for a guesser that sprays many account names); every other address is unaffected.

Each counter lives for ``LOGIN_THROTTLE_SECONDS`` from its first failure, then starts again from nothing:
nothing is ever locked for good. A successful login clears its (account, address) counter, not its address's.

**Atomic.** A password check first *reserves* a slot on both counters (one ``INSERT ... ON CONFLICT DO UPDATE
... WHERE count < limit RETURNING`` statement for both, atomic on PostgreSQL and SQLite; on MySQL/MariaDB the
same in one transaction holding the rows' locks) and is refused unchecked when either is full;
a failed check keeps its slot as the failure, a successful one gives it back. So N parallel guesses against a
limit of L get at most L password checks, however they interleave. (django-axes checks the lock before the
password and counts the failure after it: 32 parallel wrong guesses against its limit of 10 got 32 password
checks, measured with django-axes 8.3.1 on PostgreSQL with its database handler and with its Redis cache
handler; and its one failure limit has no separate address ceiling. Hence this module.)

**In the database**, not the cache: the counters are shared by every web process with no Redis configured
(``make run``), and they work unchanged when Redis is unreachable. Expired rows are deleted whenever a new
window starts.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Value, When

from grading.conf import setting
from grading.models import LoginFailureCounter

TABLE = LoginFailureCounter._meta.db_table


def _digest(value: str) -> str:
    # Hashed: keys of a fixed size, and no user name or address stored in clear.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _pair_key(username: str, address: str) -> str:
    return "pair:" + _digest(f"{username.strip().lower()}\0{address}")


def _address_key(address: str) -> str:
    return "address:" + _digest(address)


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


def _limits(username: str, address: str) -> list[tuple[str, int]]:
    return [
        (_pair_key(username, address), int(setting("LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS"))),
        (_address_key(address), int(setting("LOGIN_FAILURES_PER_ADDRESS"))),
    ]


def _wait(window_ends: float, now: float) -> int:
    return max(math.ceil(window_ends - now), 1)


def retry_after(username: str, address: str) -> int:
    """Seconds until a login for ``username`` from ``address`` may be tried again; 0 when it may now."""
    now = time.time()
    limits = dict(_limits(username, address))
    rows = LoginFailureCounter.objects.filter(key__in=list(limits), window_ends__gt=now).values_list(
        "key", "count", "window_ends"
    )
    waits = [_wait(window_ends, now) for key, count, window_ends in rows if count >= limits[key]]
    return max(waits, default=0)


def _take(limits: list[tuple[str, int]], now: float, window: int) -> dict[str, tuple[int, float]]:
    """Add one to each counter of ``limits`` that is below its limit (or whose window has ended: it starts
    again at 1), in one statement; {key: (new count, window end)} of the counters that took it."""
    take = _take_mysql if connection.vendor == "mysql" else _take_returning
    taken = take(limits, now, window)
    if any(window_ends == now + window for _, window_ends in taken.values()):
        # A new window: a good moment to forget the counters whose window has ended.
        LoginFailureCounter.objects.filter(window_ends__lte=now).delete()
    return taken


def _take_mysql(limits: list[tuple[str, int]], now: float, window: int) -> dict[str, tuple[int, float]]:
    """``_take`` on MySQL/MariaDB, which have neither ON CONFLICT ... WHERE nor RETURNING: in one transaction,
    make sure both rows exist (a no-op upsert, which locks them), read them locked, and write the counters
    that take a slot. Concurrent calls queue on the row locks, so each sees the counts the one before left."""
    keys = [key for key, _ in limits]
    taken: dict[str, tuple[int, float]] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (`key`, count, window_ends) VALUES "  # noqa: S608 (a constant name)
            + ", ".join(["(%s, 0, %s)"] * len(keys))
            + " ON DUPLICATE KEY UPDATE `key` = `key`",
            [value for key in keys for value in (key, now + window)],
        )
        cursor.execute(
            f"SELECT `key`, count, window_ends FROM {TABLE} WHERE `key` IN ({', '.join(['%s'] * len(keys))}) "  # noqa: S608
            "FOR UPDATE",
            keys,
        )
        current = {key: (int(count), float(ends)) for key, count, ends in cursor.fetchall()}
        for key, limit in limits:
            count, ends = current[key]
            if ends <= now or count == 0:
                taken[key] = (1, now + window)
            elif count < limit:
                taken[key] = (count + 1, ends)
        for key, (count, ends) in taken.items():
            cursor.execute(f"UPDATE {TABLE} SET count = %s, window_ends = %s WHERE `key` = %s", [count, ends, key])  # noqa: S608
    return taken


def _take_returning(limits: list[tuple[str, int]], now: float, window: int) -> dict[str, tuple[int, float]]:
    rows = ", ".join(["(%s, 1, %s)"] * len(limits))
    limit_of = " ".join(["WHEN %s THEN %s"] * len(limits))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (key, count, window_ends) VALUES {rows} "  # noqa: S608 (constant names)
            "ON CONFLICT (key) DO UPDATE SET "
            f"count = CASE WHEN {TABLE}.window_ends <= %s THEN 1 ELSE {TABLE}.count + 1 END, "
            f"window_ends = CASE WHEN {TABLE}.window_ends <= %s THEN excluded.window_ends "
            f"ELSE {TABLE}.window_ends END "
            f"WHERE {TABLE}.window_ends <= %s OR {TABLE}.count < CASE {TABLE}.key {limit_of} END "
            "RETURNING key, count, window_ends",
            [value for key, _ in limits for value in (key, now + window)]
            + [now, now, now]
            + [value for key, limit in limits for value in (key, limit)],
        )
        return {key: (int(count), float(window_ends)) for key, count, window_ends in cursor.fetchall()}


def _give_back(*keys: str) -> None:
    LoginFailureCounter.objects.filter(key__in=keys, count__gt=0).update(count=F("count") - 1)


@dataclass(frozen=True)
class Reservation:
    """A slot on both counters, held while one password is checked."""

    pair_key: str
    address_key: str

    def succeeded(self) -> None:
        """The password was right: its slot was no failure, and the account's failures from here are forgiven
        (the pair's counter drops to 0 within its window, so the next login starts no new window)."""
        LoginFailureCounter.objects.filter(key__in=[self.pair_key, self.address_key], count__gt=0).update(
            count=Case(When(key=self.pair_key, then=Value(0)), default=F("count") - 1)
        )

    def failed(self) -> None:
        """The password was wrong: the slot stays, as the failure."""

    def cancel(self) -> None:
        """No answer was reached (an error while checking): the slot was no failure."""
        _give_back(self.pair_key, self.address_key)


def reserve(username: str, address: str) -> Reservation | int:
    """A slot for one password check of ``username`` from ``address``, or the seconds to wait if either counter
    is full (then nothing is counted, and with both full nothing is written)."""
    now = time.time()
    limits = _limits(username, address)
    taken = _take(limits, now, int(setting("LOGIN_THROTTLE_SECONDS")))
    if len(taken) == len(limits):
        return Reservation(pair_key=limits[0][0], address_key=limits[1][0])
    if taken:
        _give_back(*taken)
    return retry_after(username, address) or 1


def message(seconds: int) -> str:
    return f"Too many failed logins; try again in {seconds} seconds"
