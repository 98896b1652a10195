"""The embedded broker: messages appear in the queue folder whole, never half-written, from gradequeue's own
processes and from the grader SDK's worker alike (one transport class, named as the broker transport)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kombu import Connection, Queue

from gradequeue_grader import filesystem
from gradequeue_grader.worker import make_app


def _publish_and_read(conn: Connection, folder: Path) -> None:
    queue = Queue("q", routing_key="q")
    with conn.SimpleQueue(queue) as simple:
        simple.clear()
    with conn.Producer() as producer:
        producer.publish({"n": 1}, routing_key="q", declare=[queue], serializer="json")
    names = [n for n in os.listdir(folder) if n.endswith(".q.msg")]
    assert len(names) == 1
    assert os.listdir(folder / ".incoming") == []  # staged, then renamed into place
    with conn.SimpleQueue(queue) as simple:
        assert simple.get(timeout=2).payload == {"n": 1}


def test_the_named_transport_stages_each_message_then_renames_it_into_the_queue_folder(tmp_path: Path) -> None:
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "processed_folder": str(tmp_path)}
    with Connection("filesystem://", transport=filesystem.TRANSPORT, transport_options=options) as conn:
        assert type(conn.transport) is filesystem.Transport
        _publish_and_read(conn, tmp_path)


def test_gradequeue_celery_app_uses_it_for_the_filesystem_broker(settings: Any) -> None:
    from celery_app import app

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        # On a server broker nothing of the filesystem transport is configured.
        assert getattr(settings, "CELERY_BROKER_TRANSPORT", None) is None
        assert type(app.connection_for_write().transport) is not filesystem.Transport
        return
    assert settings.CELERY_BROKER_TRANSPORT == "gradequeue_grader.filesystem:Transport"
    with app.connection_for_write() as conn:
        assert type(conn.transport) is filesystem.Transport
        _publish_and_read(conn, Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"]))


def test_the_grader_sdk_uses_it_for_the_filesystem_broker_and_not_for_a_server_broker(tmp_path: Path) -> None:
    app = make_app("q", lambda _: {"correct": True}, "filesystem://", broker_folder=str(tmp_path))
    with app.connection_for_write() as conn:
        assert type(conn.transport) is filesystem.Transport
        _publish_and_read(conn, tmp_path)
    app = make_app("q", lambda _: {"correct": True}, "redis://127.0.0.1:1/0")
    assert app.conf.broker_transport is None
    assert type(app.connection_for_write().transport).__module__ == "kombu.transport.redis"


def test_the_kombu_alias_is_left_as_upstream_has_it() -> None:
    # Installed through the broker transport setting, not by rewriting kombu's alias table for everyone.
    from kombu.transport import TRANSPORT_ALIASES

    assert TRANSPORT_ALIASES["filesystem"] == "kombu.transport.filesystem:Transport"
