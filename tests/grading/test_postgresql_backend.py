"""The PostgreSQL health check: no round trip on a sound connection, a broken one still replaced.

Django's own check sends ``SELECT 1`` before the first query of every request; grading.postgresql_backend
looks at the socket first. What PostgreSQL last ran on a connection is in ``pg_stat_activity.query``, read
here from a second connection: after the check on a sound connection it is still the test's own statement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "postgresql" not in __import__("django.conf").conf.settings.DATABASES["default"]["ENGINE"],
        reason="the check of grading.postgresql_backend (PostgreSQL only)",
    ),
]


@pytest.fixture
def observer() -> Iterator[Any]:
    """A second connection to the same database, to watch the first one's backend."""
    other = connections.create_connection("default")
    try:
        yield other
    finally:
        other.close()


def last_statement(observer: Any, pid: int) -> str:
    with observer.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row[0] if row else ""


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_postgresql_urls_select_this_backend() -> None:
    assert connection.settings_dict["ENGINE"] == "grading.postgresql_backend"
    assert type(connections["default"]).__module__ == "grading.postgresql_backend.base"


def test_a_sound_idle_connection_passes_the_check_without_a_statement(observer: Any) -> None:
    pid = backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'the statement before the check'")
    assert connection.is_usable() is True
    assert connection.is_usable() is True
    assert last_statement(observer, pid) == "SELECT 'the statement before the check'"


def test_a_connection_whose_server_process_was_terminated_fails_the_check_and_is_replaced(observer: Any) -> None:
    pid = backend_pid()
    with observer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    # The server's FATAL message and the end of the stream reach the socket shortly after.
    deadline = time.monotonic() + 10
    while connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connection.is_usable() is False

    # As at the start of a request: the check fails, the connection is closed, the next query reconnects.
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    assert connection.connection is None
    assert backend_pid() != pid


def test_a_connection_in_a_transaction_is_checked_with_a_round_trip(observer: Any) -> None:
    pid = backend_pid()
    connection.set_autocommit(False)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 'inside a transaction'")
        assert connection.is_usable() is True
        assert last_statement(observer, pid) == "SELECT 1"
    finally:
        connection.rollback()
        connection.set_autocommit(True)
