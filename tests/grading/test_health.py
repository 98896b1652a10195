"""The readiness endpoint: database and broker, each checked for real, and which one is failing."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client


def closed_port() -> int:
    """A local port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready() -> tuple[int, dict[str, Any]]:
    response = Client().get("/xqueue/ready/")
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
    if connection.vendor == "postgresql":
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
