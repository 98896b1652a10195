"""With the database unreachable, every XQueue endpoint answers the protocol's failure envelope (HTTP 200,
return_code 1), never a 500, and logs the outage once, not once per call.

The connection is pointed at a database that cannot be reached, for real (a closed port for PostgreSQL and
MySQL/MariaDB, a file in a missing folder for SQLite); tests/e2e/test_database_outage.py cuts a live one
under the server.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from grading import outage

UNAVAILABLE = {"return_code": 1, "content": "Service temporarily unavailable; try again"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clients(grader_user: Any, lms_user: Any) -> tuple[Client, Client]:
    """A grader and an LMS logged in while the database answered: their sessions are in the database."""
    grader, lms = Client(), Client()
    grader.force_login(grader_user)
    lms.force_login(lms_user)
    return grader, lms


@pytest.fixture
def database_down(clients: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[tuple[Client, Client]]:
    connection.close()
    if connection.vendor in ("postgresql", "mysql"):
        monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(connection.settings_dict, "PORT", closed_port())
    else:
        monkeypatch.setitem(connection.settings_dict, "NAME", str(tmp_path / "missing-dir" / "db.sqlite3"))
    outage.database.reset()
    try:
        yield clients
    finally:
        connection.close()
        monkeypatch.undo()
        outage.database.reset()


def envelope(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


@pytest.mark.django_db(transaction=True)
def test_every_xqueue_endpoint_answers_the_envelope_when_the_database_is_unreachable(
    database_down: tuple[Client, Client], caplog: pytest.LogCaptureFixture
) -> None:
    # Logged in before the outage: each call now fails to read its session.
    grader, lms = database_down
    header = json.dumps({"lms_callback_url": "http://127.0.0.1:9/cb", "lms_key": "k", "queue_name": "test-123"})
    reply_header = json.dumps({"submission_id": 1, "submission_key": "x"})
    with caplog.at_level(logging.WARNING, logger="grading.database"):
        for _ in range(2):
            assert envelope(Client().post("/xqueue/login/", {"username": "grader", "password": "pw"})) == UNAVAILABLE
            assert envelope(lms.post("/xqueue/submit/", {"xqueue_header": header, "xqueue_body": "{}"})) == UNAVAILABLE
            assert envelope(grader.get("/xqueue/get_queuelen/", {"queue_name": "test-123"})) == UNAVAILABLE
            assert envelope(grader.get("/xqueue/get_submission/", {"queue_name": "test-123"})) == UNAVAILABLE
            put = {"xqueue_header": reply_header, "xqueue_body": "{}"}
            assert envelope(grader.post("/xqueue/put_result/", put)) == UNAVAILABLE
            assert envelope(grader.post("/xqueue/logout/")) == UNAVAILABLE
    # The liveness answer needs no database.
    assert envelope(Client().get("/xqueue/status/")) == {"return_code": 0, "content": "OK"}
    lines = [r.getMessage() for r in caplog.records if r.name == "grading.database"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("database unavailable: OperationalError")
    assert all(r.exc_info is None for r in caplog.records if r.name == "grading.database")
