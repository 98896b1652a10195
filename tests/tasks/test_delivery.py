"""LMS delivery, scoring and reclaiming with a real Celery worker, a real broker and a real HTTP LMS."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from grading import grades, lifecycle
from grading.models import Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, fast_pipeline, lms_header, submit
from tests.lms import FakeLMS, free_port
from tests.support.states import graded_submission, status_of
from tests.support.waiting import wait_for
from tests.xqclient import XQueueClient, grade, lms_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]


def test_lms_answering_500_three_times_then_200_gets_the_grade_once_with_backoff(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    fake_lms.script = [500, 500, 500]
    submission = graded_submission(queue, lms_user, grader_user, fake_lms.callback_url())
    wait_for(lambda: status_of(submission) == Status.DELIVERED, what="delivery")
    assert [cb.status for cb in fake_lms.callbacks] == [500, 500, 500, 200]
    assert len(fake_lms.delivered()) == 1
    retries = list(submission.events.filter(reason="delivery_retry").values_list("details", flat=True))
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    assert all(r["http_status"] == 500 for r in retries)
    # Each wait is drawn from [ceiling/2, ceiling] with the ceiling doubling: base 0.05 s, cap 0.4 s.
    for retry, ceiling in zip(retries, [0.05, 0.1, 0.2], strict=True):
        assert ceiling / 2 - 0.001 <= retry["retry_in"] <= ceiling + 0.001
    # The LMS saw the retries spaced by at least the recorded waits.
    gaps = [b.received_at - a.received_at for a, b in zip(fake_lms.callbacks, fake_lms.callbacks[1:], strict=False)]
    for gap, retry in zip(gaps, retries, strict=False):
        assert gap >= retry["retry_in"] * 0.9
    delivered = submission.events.get(to_status=Status.DELIVERED)
    assert delivered.details["attempt"] == 4
    submission.refresh_from_db()
    assert submission.delivery_attempts == 4
    # The grade was scored once: a down LMS never causes re-grading.
    assert submission.events.filter(to_status=Status.GRADED, from_status=Status.RETURNED).count() == 1


def test_lms_down_past_the_horizon_dead_letters_then_admin_redelivers(
    settings: Any, celery_worker_app: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings, DELIVERY_HORIZON=0.5)
    lms = FakeLMS(port=free_port())  # nothing listens there yet: connection refused
    submission = graded_submission(queue, lms_user, grader_user, lms.callback_url())
    wait_for(lambda: status_of(submission) == Status.DEAD_LETTER, what="dead letter")
    failed = submission.events.get(to_status=Status.DEAD_LETTER)
    assert failed.details["why"] == "delivery horizon exhausted"
    assert "ConnectionError" in failed.details["error"]

    lms.start()
    try:
        staff = get_user_model().objects.create_superuser("ops", "ops@example.org", "ops-password-1")
        client = Client()
        client.force_login(staff)
        response = client.post(
            "/admin/grading/submission/",
            {"action": "redeliver", "_selected_action": [str(submission.pk)]},
        )
        assert response.status_code == 302
        wait_for(lambda: status_of(submission) == Status.DELIVERED, what="redelivery")
        assert len(lms.delivered()) == 1
        assert lms.delivered()[0].body == grade()
        redeliver = submission.events.get(reason="redeliver")
        assert redeliver.actor == "admin:ops"
    finally:
        lms.stop()


def test_permanent_lms_error_dead_letters_at_once(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    fake_lms.default = 404
    submission = graded_submission(queue, lms_user, grader_user, fake_lms.callback_url())
    wait_for(lambda: status_of(submission) == Status.DEAD_LETTER, what="dead letter")
    assert len(fake_lms.callbacks) == 1
    assert submission.events.get(to_status=Status.DEAD_LETTER).details["why"] == "the LMS answered HTTP 404"


def test_unusable_grader_reply_sends_the_lms_the_could_not_be_graded_notice(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    submission = graded_submission(queue, lms_user, grader_user, fake_lms.callback_url(), reply="garbage")
    wait_for(lambda: status_of(submission) == Status.DELIVERED, what="delivery")
    assert json.loads(fake_lms.delivered()[0].body) == json.loads(grades.not_graded_notice())
    submission.refresh_from_db()
    assert submission.failure_reason == "grader reply: the reply is not JSON"


def test_lease_expiring_max_attempts_times_fails_and_the_lms_is_told(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    queue.max_attempts = 2
    queue.save()
    submission = submit(queue, lms_user, callback_url=fake_lms.callback_url(), body=lms_body())
    reclaim = celery_worker_app.tasks["grading.reclaim_expired_leases"]
    with time_machine.travel(timezone.now()) as clock:
        for _ in range(2):
            assert lifecycle.lease_next(queue, grader_user) is not None
            clock.shift(timedelta(seconds=301))
            reclaim.delay()
            wait_for(lambda: status_of(submission) != Status.PULLED, what="reclaim")
        wait_for(lambda: status_of(submission) == Status.DELIVERED, what="notice delivery")
    assert len(fake_lms.delivered()) == 1
    notice = json.loads(fake_lms.delivered()[0].body)
    assert notice["correct"] is None
    assert "could not be graded" in notice["msg"]
    assert fake_lms.delivered()[0].header == lms_header(fake_lms.callback_url())


def test_superseded_submission_late_grade_is_not_delivered(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    old = submit(queue, lms_user, callback_url=fake_lms.callback_url(), body="old", lms_key="k-old")
    lease = lifecycle.lease_next(queue, grader_user)
    new = submit(queue, lms_user, callback_url=fake_lms.callback_url(), body="new", lms_key="k-new")
    late = lifecycle.accept_result(old.pk, lease.key, grade(), grader_user, [queue.pk])
    assert late is lifecycle.ResultOutcome.WRONG_KEY
    fresh = lifecycle.lease_next(queue, grader_user)
    assert fresh.submission_id == new.pk
    lifecycle.accept_result(new.pk, fresh.key, grade(False, 0), grader_user, [queue.pk])
    wait_for(lambda: status_of(new) == Status.DELIVERED, what="delivery")
    assert status_of(old) == Status.SUPERSEDED
    assert [json.loads(cb.header)["lms_key"] for cb in fake_lms.callbacks] == ["k-new"]


def test_broker_down_while_put_result_commits_grade_still_delivered_once(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    live_server: Any,
    celery_worker_app: Any,
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    watcher = XQueueClient(live_server.url, "grader", GRADER_PASSWORD)
    lms.submit(lms_header(fake_lms.callback_url()), lms_body())
    content = json.loads(watcher.get_submission("test-123")["content"])

    def broker_unreachable(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("[Errno 111] Connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(celery_worker_app, "send_task", broker_unreachable)
        assert watcher.put_result(content["xqueue_header"], grade()) == {"return_code": 0, "content": ""}
    submission = Submission.objects.get()
    assert submission.status == Status.RETURNED  # committed, though its task message never left
    # The broker is back; the periodic sweep finds the work and carries it through.
    celery_worker_app.tasks["grading.sweep_followups"].delay()
    wait_for(lambda: status_of(submission) == Status.DELIVERED, what="delivery after the sweep")
    assert len(fake_lms.delivered()) == 1
    # Sweeping again sends nothing twice.
    celery_worker_app.tasks["grading.sweep_followups"].delay()
    import time

    time.sleep(0.5)
    assert len(fake_lms.callbacks) == 1
