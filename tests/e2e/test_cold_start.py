"""A watcher's threads all log in at once against a freshly started server, each within its 1 s timeout.

The 2026 xqueue-watcher gives its login 1 s (``REQUESTS_TIMEOUT``) and exits when it misses it. Each server
here is a new subprocess with cold caches, checking credentials as production does (not with the tests'
in-process MD5 hasher); the grader account has a generated machine secret. The 1 s is the client's timeout,
as the real watcher has it: a login that misses it fails the test, exactly as it kills the watcher.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from django.core.management import call_command

from grading.models import Queue
from tests.xqclient import XQueueClient

WATCHER_TIMEOUT = 1.0


def generated_secret(username: str, role: str, queue: str) -> str:
    out = io.StringIO()
    call_command("create_account", username, role=role, queue=[queue], generate_secret=True, stdout=out)
    return out.getvalue().splitlines()[-1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("connections", [8, 32])
def test_every_watcher_thread_logs_in_within_its_timeout_at_a_cold_start(
    server: str,
    connections: int,
) -> None:
    Queue.objects.create(name="cold")
    secret = generated_secret("watcher", "grader", "cold")
    clients = [
        XQueueClient(server, "watcher", secret, csrf_prelude=True, timeout=WATCHER_TIMEOUT) for _ in range(connections)
    ]
    start = threading.Barrier(connections)
    outcomes: list[Any] = [None] * connections

    def run(i: int) -> None:
        start.wait()
        try:
            # Like the 2026 watcher: GET the login page, log in, then poll with the session.
            outcomes[i] = (clients[i].login(), clients[i].get_queuelen("cold"))
        except Exception as exc:  # a timeout, above all
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes == [({"return_code": 0, "content": "Logged in"}, {"return_code": 0, "content": 0})] * connections
    assert [client.logins for client in clients] == [1] * connections
