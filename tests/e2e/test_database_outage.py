"""A database that goes away under the production server: the XQueue calls answer the protocol's failure
envelope (never a 500), a waiting get_submission survives a dropped connection, and everything works again
once the database is back. PostgreSQL is reached through a real TCP proxy that the test cuts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from grading.models import Queue, Role, Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, make_account, submit
from tests.processes import database_url
from tests.support.services import running_server
from tests.tcpproxy import TcpProxy
from tests.xqclient import XQueueClient, grade, lms_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "postgresql" not in __import__("django.conf").conf.settings.DATABASES["default"]["ENGINE"],
        reason="a dropped database connection needs a database server (PostgreSQL, as CI runs it)",
    ),
]

APP_NAME = "gq-outage-test"


@pytest.fixture
def proxied(settings: Any, tmp_path: Path) -> Iterator[tuple[str, TcpProxy, Path]]:
    """The production server, two workers, on the test database through a proxy; its log in a file."""
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    url = database_url().replace(f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/", f"@127.0.0.1:{proxy.port}/")
    log_path = tmp_path / "server.log"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    with (
        open(log_path, "wb") as log,
        running_server(
            str(settings.MEDIA_ROOT),
            log=log,
            DATABASE_URL=f"{url}?application_name={APP_NAME}",
            GRADEQUEUE_EMPTY_POLL_WAIT="0.8",
        ) as (base_url, _process),
    ):
        try:
            yield base_url, proxy, log_path
        finally:
            proxy.stop()


@pytest.fixture
def served_queue(settings: Any) -> Queue:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    queue = Queue.objects.create(name="served")
    make_account("lms", LMS_PASSWORD, Role.LMS, queue)
    make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)
    return queue


def header(student: int) -> dict[str, str]:
    return {
        "lms_callback_url": f"http://127.0.0.1:9/courses/c/xqueue/{student}/p/score_update",
        "lms_key": f"key-{student}",
        "queue_name": "served",
    }


def server_query_started_after(moment: float) -> bool:
    """Has a database session of the server started a statement after ``moment`` (epoch seconds)?"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND extract(epoch FROM query_start) > %s",
            [APP_NAME, moment],
        )
        return bool(cursor.fetchone()[0])


def test_a_waiting_get_submission_survives_its_dropped_connection_and_hands_out_what_arrives(
    proxied: tuple[str, TcpProxy, Path], served_queue: Queue
) -> None:
    base_url, proxy, _log = proxied
    grader = XQueueClient(base_url, "grader", GRADER_PASSWORD)
    assert grader.login()["return_code"] == 0
    lms_user = served_queue.grants.get(role=Role.LMS).user
    survived = []
    for attempt in range(6):
        replies: list[dict[str, Any]] = []
        waiter = threading.Thread(target=lambda out=replies: out.append(grader.get_submission("served")))
        started = time.time()
        waiter.start()
        # Wait until the request is inside its wait (polling the database), then drop its connection.
        while waiter.is_alive() and not server_query_started_after(started + 0.1):
            time.sleep(0.01)
        if not waiter.is_alive():
            continue  # too slow a machine to catch it waiting: try again
        proxy.cut()
        proxy.restore()
        arrived = submit(served_queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{attempt}", lms_key=f"k{attempt}")
        cut_while_waiting = waiter.is_alive()
        waiter.join(10)
        assert replies, "get_submission did not answer"
        reply = replies[0]
        assert reply["return_code"] in (0, 1) and "content" in reply
        if cut_while_waiting and reply["return_code"] == 0:
            assert json.loads(json.loads(reply["content"])["xqueue_header"])["submission_id"] == arrived.pk
            survived.append(arrived.pk)
            break
        # The submission was not handed out to the waiter (it had stopped waiting): clear it for the next try.
        Submission.objects.filter(pk=arrived.pk).delete()
    assert survived, "no waiting get_submission survived its dropped connection"
    assert Submission.objects.get(pk=survived[0]).status == Status.PULLED


def test_every_xqueue_call_answers_the_envelope_while_the_database_is_cut_and_works_again_after(
    proxied: tuple[str, TcpProxy, Path], served_queue: Queue
) -> None:
    base_url, proxy, log_path = proxied
    lms = XQueueClient(base_url, "lms", LMS_PASSWORD)
    grader = XQueueClient(base_url, "grader", GRADER_PASSWORD)
    assert lms.submit(header(1), lms_body())["return_code"] == 0
    pulled = grader.get_submission("served")
    assert pulled["return_code"] == 0
    leased_header = json.loads(pulled["content"])["xqueue_header"]

    proxy.cut()
    # Every reply is HTTP 200 (XQueueClient raises on any other status) with the failure envelope.
    unavailable = {"return_code": 1, "content": "Service temporarily unavailable; try again"}
    for _ in range(3):  # both web workers, more than once each
        assert lms.submit(header(2), lms_body()) == unavailable
        assert grader.get_submission("served") == unavailable
        assert grader.get_queuelen("served") == unavailable
        assert grader.put_result(leased_header, grade()) == unavailable
        fresh = XQueueClient(base_url, "grader", GRADER_PASSWORD)
        assert fresh.login() == unavailable
    assert grader.session.get(f"{base_url}/xqueue/status/", timeout=5).json() == {"return_code": 0, "content": "OK"}

    proxy.restore()
    deadline = time.monotonic() + 20
    while grader.get_queuelen("served")["return_code"] != 0:
        assert time.monotonic() < deadline, "the server did not recover after the database came back"
        time.sleep(0.1)
    # A full cycle works again, with the result of the lease taken before the outage.
    assert grader.put_result(leased_header, grade()) == {"return_code": 0, "content": ""}
    assert lms.submit(header(3), lms_body()) == {"return_code": 0, "content": "1"}
    again = grader.get_submission("served")
    assert again["return_code"] == 0
    assert grader.put_result(json.loads(again["content"])["xqueue_header"], grade())["return_code"] == 0
    for _ in range(4):  # let every worker see the database again
        grader.get_queuelen("served")
    assert not Submission.objects.filter(lms_key="key-2").exists()  # nothing was stored while it was cut

    log = log_path.read_text()
    assert "Traceback" not in log
    down = [line for line in log.splitlines() if "database unavailable" in line]
    back = [line for line in log.splitlines() if "database available again" in line]
    # One line per web worker that saw the outage (two workers), not one per failed call (fifteen here).
    assert 1 <= len(down) <= 2, down
    assert 1 <= len(back) <= 2, back
