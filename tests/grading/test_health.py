"""The readiness endpoint: database and broker, each checked for real, and which one is failing."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from grading import health
from tests.tcpproxy import SilentListener


def closed_port() -> int:
    """A local port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN = "ready-test-token"


@pytest.fixture(autouse=True)
def _metrics_token(settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "METRICS_TOKEN": TOKEN}


def ready(client: Client | None = None, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    """The readiness answer; by default as the operator with the metrics token sees it (details included)."""
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = (client or Client()).get("/xqueue/ready/", **extra)
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    return response.status_code, json.loads(response.content)


@pytest.mark.django_db
def test_ready_when_the_database_and_the_configured_broker_answer() -> None:
    status, body = ready()
    assert status == 200, body
    assert body["ready"] is True
    assert body["failing"] == []
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


@pytest.mark.django_db
def test_not_ready_and_names_the_broker_when_the_broker_is_unreachable(settings: Any) -> None:
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "READY_TIMEOUT": 1.0}
    started = time.monotonic()
    status, body = ready()
    assert time.monotonic() - started < 3.0  # one short try, no retry loop
    assert status == 503
    assert body["ready"] is False
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert "refused" in body["checks"]["broker"]["detail"].lower()


@pytest.mark.django_db
def test_not_ready_when_the_filesystem_broker_folder_is_missing(settings: Any, tmp_path: Any) -> None:
    settings.CELERY_BROKER_URL = "filesystem://"
    missing = str(tmp_path / "no-such-folder")
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": missing, "data_folder_out": missing}
    status, body = ready()
    assert status == 503
    assert body["failing"] == ["broker"]
    assert "no-such-folder" in body["checks"]["broker"]["detail"]


@pytest.mark.django_db(transaction=True)
def test_not_ready_and_names_the_database_when_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # Point the default connection at a database that cannot be reached, for real, then put it back.
    connection.close()
    if connection.vendor in ("postgresql", "mysql"):
        monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(connection.settings_dict, "PORT", closed_port())
    else:
        monkeypatch.setitem(connection.settings_dict, "NAME", str(tmp_path / "missing-dir" / "db.sqlite3"))
    try:
        status, body = ready()
    finally:
        connection.close()
        monkeypatch.undo()
    assert status == 503
    assert body["failing"] == ["database"]
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["detail"].startswith("OperationalError")


@pytest.mark.django_db
def test_anonymous_callers_and_api_accounts_see_what_fails_but_no_error_text(settings: Any, grader_user: Any) -> None:
    port = closed_port()
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "READY_TIMEOUT": 1.0}
    grader = Client()
    grader.force_login(grader_user)
    for client in (Client(), grader):
        status, body = ready(client, token=None)
        assert status == 503
        assert body["failing"] == ["broker"]
        assert body["checks"]["broker"]["detail"] == "unavailable"
        assert body["checks"]["database"]["detail"] == "ok"
        assert str(port) not in json.dumps(body) and "refused" not in json.dumps(body).lower()
    # A wrong token is anonymous too.
    assert ready(token="not-the-token")[1]["checks"]["broker"]["detail"] == "unavailable"


@pytest.mark.django_db
def test_staff_and_the_metrics_token_see_the_error_text(settings: Any, django_user_model: Any) -> None:
    port = closed_port()
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "READY_TIMEOUT": 1.0}
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("operator", password="x", is_staff=True))
    for body in (ready(staff, token=None)[1], ready()[1]):
        assert "refused" in body["checks"]["broker"]["detail"].lower()


@pytest.mark.django_db
def test_the_answer_is_kept_for_a_moment_so_a_polling_loop_opens_one_broker_connection(settings: Any) -> None:
    broker = SilentListener()  # takes the connection, never answers: each check costs its timeout
    try:
        settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{broker.port}//"
        settings.GRADEQUEUE = {**settings.GRADEQUEUE, "READY_TIMEOUT": 0.3, "READY_CACHE_SECONDS": 60.0}
        answers = [ready(Client(), token=None) for _ in range(10)]
        assert {status for status, _ in answers} == {503}
        assert broker.connections == 1
        # With nothing kept, every request checks again: the cache above is what spared the broker.
        settings.GRADEQUEUE = {**settings.GRADEQUEUE, "READY_CACHE_SECONDS": 0.0}
        for _ in range(3):
            ready(Client(), token=None)
        assert broker.connections == 4
    finally:
        broker.stop()


@pytest.mark.django_db
def test_an_unreachable_cache_is_reported_as_degraded_and_the_process_stays_ready(settings: Any) -> None:
    from django.core.cache import cache

    settings.CACHES = {
        "default": {
            "BACKEND": "grading.rediscache.ResilientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/3",
        }
    }
    try:
        status, body = ready()
        assert status == 200, body
        assert body["ready"] is True
        assert body["failing"] == []
        assert body["degraded"] == ["cache"]
        assert body["checks"]["cache"]["ok"] is False
        assert "ConnectionError" in body["checks"]["cache"]["detail"]
        health.forget()
        assert ready(Client(), token=None)[1]["checks"]["cache"]["detail"] == "degraded"
    finally:
        cache.close()


@pytest.mark.django_db
def test_a_local_cache_is_nothing_to_reach() -> None:
    status, body = ready()
    assert status == 200
    assert body["degraded"] == []
    assert body["checks"]["cache"] == {
        "ok": True,
        "detail": "local",
        "duration_ms": body["checks"]["cache"]["duration_ms"],
    }
