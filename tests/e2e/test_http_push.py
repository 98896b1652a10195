"""HTTP push end to end: gradequeue's worker POSTs each submission to a real small HTTP grader, and the
grade (or the "could not be graded" notice) reaches a real HTTP server standing in for the LMS."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from grading.grades import NOT_GRADED_MSG
from grading.models import Queue, QueueMode, Status, Submission
from tests.conftest import fast_pipeline, submit
from tests.http_grader import FakeHTTPGrader
from tests.lms import FakeLMS
from tests.support.waiting import wait_for
from tests.xqclient import lms_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]


@pytest.fixture
def http_grader() -> Iterator[FakeHTTPGrader]:
    grader = FakeHTTPGrader().start()
    yield grader
    grader.stop()


@pytest.fixture
def fast_push(settings: Any) -> None:
    fast_pipeline(
        settings,
        PUSH_HTTP_ATTEMPTS=3,
        PUSH_HTTP_BACKOFF_BASE=0.2,
        PUSH_HTTP_BACKOFF_CAP=1.0,
        PUSH_HTTP_TIMEOUT=2.0,
        PUBLIC_BASE_URL="http://gradequeue.test/",
    )


def http_queue(url: str, **fields: Any) -> Queue:
    return Queue.objects.create(name="http-q", mode=QueueMode.HTTP, push_url=url, **fields)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/grade"  # nothing listens there any more


def delivered(pk: int) -> Submission | None:
    return Submission.objects.filter(pk=pk, status=Status.DELIVERED).first()


def test_http_grader_gets_the_reference_payload_and_its_grade_reaches_the_lms_once(
    celery_worker_app: Any, fast_push: None, http_grader: FakeHTTPGrader, fake_lms: FakeLMS, lms_user: Any
) -> None:
    queue = http_queue(http_grader.url, push_username="course-grader", push_password="s3cret")
    sub = submit(queue, lms_user, fake_lms.callback_url(), lms_body(response="42"))

    wait_for(lambda: delivered(sub.pk), what="the grade delivered")
    time.sleep(0.3)
    [pushed] = http_grader.pushes
    # The reference's push: raw JSON with the body and the file links, no header and no Content-Type.
    assert json.loads(pushed.body) == {"xqueue_body": sub.body, "xqueue_files": "{}"}
    assert pushed.content_type is None
    assert pushed.authorization == "Basic " + base64.b64encode(b"course-grader:s3cret").decode()
    [callback] = fake_lms.callbacks
    assert callback.header == sub.lms_header
    assert json.loads(callback.body) == {"correct": True, "score": 1.0, "msg": "<p>42</p>"}
    events = list(Submission.objects.get(pk=sub.pk).events.values_list("to_status", "actor"))
    assert events == [
        ("queued", "user:lms"),
        ("pulled", "system:dispatch"),
        ("returned", "grader:http"),
        ("graded", "system:scoring"),
        ("delivered", "system:delivery"),
    ]


def test_http_grader_answering_500_then_200_is_retried_and_graded_once(
    celery_worker_app: Any, fast_push: None, http_grader: FakeHTTPGrader, fake_lms: FakeLMS, lms_user: Any
) -> None:
    http_grader.script = [500, 503]
    queue = http_queue(http_grader.url)
    sub = submit(queue, lms_user, fake_lms.callback_url(), lms_body(response="7"))

    wait_for(lambda: delivered(sub.pk), what="the grade delivered")
    time.sleep(0.5)
    assert len(http_grader.pushes) == 3
    assert len({p.body for p in http_grader.pushes}) == 1  # the same payload each time
    assert http_grader.pushes[0].authorization is None
    [callback] = fake_lms.callbacks
    assert json.loads(callback.body) == {"correct": False, "score": 0.0, "msg": "<p>7</p>"}
    sub.refresh_from_db()
    assert sub.attempts == 1  # retried within one lease


def test_http_grader_down_for_good_fails_the_submission_and_the_lms_gets_the_notice(
    celery_worker_app: Any, fast_push: None, fake_lms: FakeLMS, lms_user: Any
) -> None:
    queue = http_queue(closed_port_url())
    sub = submit(queue, lms_user, fake_lms.callback_url(), lms_body(response="42"))

    wait_for(lambda: delivered(sub.pk), what="the notice delivered")
    time.sleep(0.3)
    [callback] = fake_lms.callbacks
    assert json.loads(callback.body) == {"correct": None, "score": 0, "msg": NOT_GRADED_MSG}
    sub.refresh_from_db()
    assert sub.failure_reason.startswith("HTTP push: ConnectionError")
    assert sub.failure_reason.endswith("(after 3 attempts)")
    assert list(sub.events.values_list("reason", flat=True)) == [
        "submitted", "dispatch", "push_failed", "delivered",
    ]  # fmt: skip


def test_http_grader_refusing_the_request_fails_at_once_without_retries(
    celery_worker_app: Any, fast_push: None, http_grader: FakeHTTPGrader, fake_lms: FakeLMS, lms_user: Any
) -> None:
    http_grader.default = 401  # e.g. wrong basic auth: asking again will not help
    queue = http_queue(http_grader.url, push_username="x", push_password="wrong")
    sub = submit(queue, lms_user, fake_lms.callback_url(), lms_body(response="42"))

    wait_for(lambda: delivered(sub.pk), what="the notice delivered")
    assert len(http_grader.pushes) == 1
    sub.refresh_from_db()
    assert sub.failure_reason == "HTTP push: the grader answered HTTP 401"
    assert json.loads(fake_lms.callbacks[0].body)["correct"] is None


def test_http_queue_in_flight_cap_limits_concurrent_pushes(
    celery_worker_app: Any, fast_push: None, fake_lms: FakeLMS, lms_user: Any
) -> None:
    active = 0
    peak = 0

    class SlowGrader(FakeHTTPGrader):
        def grade_for(self, body: bytes) -> str:  # type: ignore[override]
            nonlocal active, peak
            with self._lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.3)
            with self._lock:
                active -= 1
            return FakeHTTPGrader.grade_for(body)

    grader = SlowGrader().start()
    try:
        queue = http_queue(grader.url, max_in_flight=2)
        for student in range(6):
            submit(queue, lms_user, fake_lms.callback_url(student), lms_body(response="42"))
        # Two leased at once, the other four held back although the worker has four threads.
        wait_for(lambda: Submission.objects.filter(queue=queue, status=Status.PULLED).count() == 2,
                 what="two dispatched")  # fmt: skip
        assert Submission.objects.filter(queue=queue, status=Status.QUEUED).count() == 4
        leased_peak = 0
        deadline = time.monotonic() + 30
        while len(fake_lms.delivered()) < 6 and time.monotonic() < deadline:
            leased_peak = max(leased_peak, Submission.objects.filter(queue=queue, status=Status.PULLED).count())
            time.sleep(0.02)
    finally:
        grader.stop()
    assert len(fake_lms.delivered()) == 6
    assert leased_peak <= 2
    assert 1 <= peak <= 2  # never more than two POSTs at the grader at once
    assert set(Submission.objects.filter(queue=queue).values_list("attempts", flat=True)) == {1}
