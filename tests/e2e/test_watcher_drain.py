"""Watcher-like graders drain a backlog; a get_submission answered after the watcher's 1 s is dropped by the
grader, and the lease it made, held by no grader, comes back the moment it expires.

The 2026 xqueue-watcher gives every request 1 s (``REQUESTS_TIMEOUT``) and silently drops a reply that takes
longer: the lease that reply carried is held by nobody. Here a proxy in front of a freshly started production
server (cold caches, no beat, no worker) holds back the first two replies that hand out a submission for
1.5 s, so the grader's 1 s timeout drops them, as the watcher would. There is no reclaim running: each of
those submissions is handed out again only because an expired lease is waiting at once.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time

import pytest
import requests
from django.core.management import call_command

from grading import lifecycle
from grading.models import Queue, Role, Submission, SubmissionEvent
from tests.conftest import make_account
from tests.tcpproxy import TcpProxy
from tests.xqclient import XQueueClient, grade

WATCHER_TIMEOUT = 1.0
CONNECTIONS = 8
BACKLOG = 40
LEASE_SECONDS = 3
HELD_BACK = 2
SUBMISSION_ID = re.compile(rb"submission_id\D{1,8}(\d+)")


class SlowLeaseReplies(TcpProxy):
    """Holds back the first ``count`` replies that hand out a submission by ``delay`` seconds, and notes
    which submissions they carried."""

    def __init__(self, upstream_host: str, upstream_port: int, *, count: int, delay: float) -> None:
        self.remaining = count
        self.delay = delay
        self.held: list[int] = []
        super().__init__(upstream_host, upstream_port)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        if source.getpeername()[1] != self.upstream[1]:
            super()._pump(source, sink)
            return
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                found = SUBMISSION_ID.search(data) if b"submission_key" in data else None
                if found:
                    with self._lock:
                        hold = self.remaining > 0
                        if hold:
                            self.remaining -= 1
                            self.held.append(int(found.group(1)))
                    if hold:
                        time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._close(s)


def generated_secret(username: str, role: str, queue: str) -> str:
    out = io.StringIO()
    call_command("create_account", username, role=role, queue=[queue], generate_secret=True, stdout=out)
    return out.getvalue().splitlines()[-1]


@pytest.mark.django_db(transaction=True)
def test_a_lease_whose_reply_the_watcher_dropped_is_handed_out_again_the_moment_it_expires(
    server: str,
) -> None:
    queue = Queue.objects.create(name="drain", lease_seconds=LEASE_SECONDS)
    lms = make_account("lms-drain", "unused-password-1", Role.LMS, queue)
    ids = [
        lifecycle.submit(
            lifecycle.NewSubmission(
                queue=queue,
                lms_header=f'{{"lms_callback_url": "http://127.0.0.1:9/{n}", "lms_key": "k", "queue_name": "drain"}}',
                lms_callback_url=f"http://127.0.0.1:9/{n}",
                lms_key="k",
                body=f"answer {n}",
                files={},
            ),
            lms,
        )[0].pk
        for n in range(BACKLOG)
    ]
    secret = generated_secret("watcher", "grader", "drain")
    host, port = server.removeprefix("http://").split(":")
    proxy = SlowLeaseReplies(host, int(port), count=HELD_BACK, delay=WATCHER_TIMEOUT + 0.5)
    base = f"http://127.0.0.1:{proxy.port}"
    dropped: list[str] = []
    accepted: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(CONNECTIONS)
    deadline = time.monotonic() + 60

    def all_returned() -> bool:
        with lock:
            return len(accepted) >= BACKLOG

    def grader() -> None:
        client = XQueueClient(base, "watcher", secret, csrf_prelude=True, timeout=WATCHER_TIMEOUT)
        try:
            start.wait()
            client.login()
            while not all_returned() and time.monotonic() < deadline:
                try:
                    reply = client.get_submission("drain")
                except requests.Timeout:
                    with lock:
                        dropped.append("get_submission")  # as the watcher does: the lease is nobody's now
                    continue
                if reply["return_code"] != 0:
                    time.sleep(0.2)  # the watcher waits after an empty poll (1 s); shorter, for a short test
                    continue
                content = json.loads(reply["content"])
                header = content["xqueue_header"]
                pk = json.loads(header)["submission_id"]
                if client.put_result(header, grade())["return_code"] == 0:
                    with lock:
                        accepted.append(pk)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=grader) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    proxy.stop()
    assert not errors, errors
    # The two held-back replies were dropped by their graders (a loaded machine may make others late too).
    assert len(proxy.held) == HELD_BACK
    assert dropped.count("get_submission") >= HELD_BACK
    # Every submission was graded exactly once, the two whose reply was dropped included.
    assert sorted(accepted) == ids
    assert SubmissionEvent.objects.filter(reason="result").count() == BACKLOG
    for pk in proxy.held:
        row = Submission.objects.get(pk=pk)
        assert row.attempts >= 2
        steps = list(SubmissionEvent.objects.filter(submission_id=pk).order_by("id"))
        assert [(e.from_status, e.to_status, e.reason) for e in steps[:4]] == [
            ("", "queued", "submitted"),
            ("queued", "pulled", "lease"),
            ("pulled", "queued", "lease_expired"),
            ("queued", "pulled", "lease"),
        ]
        # Taken over within a moment of its expiry (no reclaim runs here; beat's would take up to 15 s more).
        first_expiry = steps[1].created_at.timestamp() + LEASE_SECONDS
        assert steps[2].created_at.timestamp() - first_expiry < 2.0, (steps[1].created_at, steps[2].created_at)
        assert steps[2].created_at == steps[3].created_at
