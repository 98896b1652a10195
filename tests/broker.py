"""Direct access to the test broker's queues, for tests of what gradequeue publishes to graders."""

from __future__ import annotations

from typing import Any

from kombu import Exchange
from kombu import Queue as BrokerQueue


def _broker_queue(name: str) -> BrokerQueue:
    # Declared exactly as gradequeue (and the grader entry point) declare it.
    return BrokerQueue(name, Exchange(name, type="direct"), routing_key=name)


def purge(name: str) -> None:
    from celery_app import app

    with app.connection_for_write() as conn:
        bound = _broker_queue(name)(conn.default_channel)
        bound.declare()
        bound.purge()


def take_messages(name: str, timeout: float = 3.0) -> list[tuple[dict[str, Any], Any]]:
    """Remove and return every message now in queue ``name`` as (headers, decoded body)."""
    from celery_app import app

    taken = []
    with app.connection_for_write() as conn:
        bound = _broker_queue(name)(conn.default_channel)
        bound.declare()
        while True:
            message = bound.get(no_ack=True, accept=["json"])
            if message is None:
                break
            taken.append((message.headers, message.decode()))
    return taken
