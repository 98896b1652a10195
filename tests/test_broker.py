"""The embedded broker: messages appear in the queue folder whole, never half-written."""

from __future__ import annotations

import os
from pathlib import Path

from kombu import Connection, Queue

from config import broker


def test_filesystem_url_uses_the_atomic_transport(tmp_path: Path) -> None:
    broker.install()
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "processed_folder": str(tmp_path)}
    with Connection("filesystem://", transport_options=options) as conn:
        assert isinstance(conn.transport, broker.Transport)
        queue = Queue("q", routing_key="q")
        with conn.Producer() as producer:
            producer.publish({"n": 1}, routing_key="q", declare=[queue], serializer="json")
        names = [n for n in os.listdir(tmp_path) if n.endswith(".q.msg")]
        assert len(names) == 1
        assert os.listdir(tmp_path / ".incoming") == []  # staged, then renamed into place
        with conn.SimpleQueue(queue) as simple:
            assert simple.get(timeout=2).payload == {"n": 1}
