"""Celery-queue graders end to end: gradequeue's worker in this process, the real grader entry point
(``python -m gradequeue_grader``) in a subprocess, a real broker between them, a real HTTP server as the LMS."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from grading import lifecycle, push
from grading.models import Queue, Status, Submission
from tests.conftest import fast_pipeline, submit
from tests.lms import FakeLMS
from tests.support.services import grader
from tests.support.waiting import wait_for
from tests.xqclient import lms_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]

ROOT = Path(__file__).resolve().parents[2]


def expected_grade(response: str) -> dict[str, Any]:
    correct = response == "42"
    return {"correct": correct, "score": 1.0 if correct else 0.0, "msg": f"<p>You answered {response}.</p>"}


def test_celery_grader_grades_100_submissions_and_each_grade_reaches_the_lms_once(
    celery_worker_app: Any, fake_lms: FakeLMS, grader_queue: Queue, lms_user: Any, settings: Any, tmp_path: Path
) -> None:
    fast_pipeline(settings)
    answers = {student: ("42" if student % 3 else "7") for student in range(100)}
    with grader(grader_queue.name, "tests.e2e.graders:grade", tmp_path):
        subs = {
            submit(grader_queue, lms_user, fake_lms.callback_url(student), lms_body(response=answer)).pk: student
            for student, answer in answers.items()
        }
        wait_for(
            lambda: Submission.objects.filter(queue=grader_queue, status=Status.DELIVERED).count() == 100,
            timeout=120,
            what="100 grades delivered",
        )
        time.sleep(0.5)  # room for any duplicate to show up

    delivered = fake_lms.delivered()
    assert len(fake_lms.callbacks) == len(delivered) == 100
    by_path = {cb.path: cb for cb in delivered}
    assert len(by_path) == 100  # every student exactly once
    for pk, student in subs.items():
        callback = by_path[fake_lms.callback_url(student).removeprefix(fake_lms.base_url)]
        assert json.loads(callback.body) == expected_grade(answers[student])
        assert json.loads(callback.header)["lms_callback_url"] == fake_lms.callback_url(student)
        events = list(Submission.objects.get(pk=pk).events.values_list("to_status", "actor"))
        assert [to for to, _ in events] == ["queued", "pulled", "returned", "graded", "delivered"]
        assert events[1][1] == "system:dispatch"
        assert events[2][1].startswith("grader:celery:grader-")


def test_grader_killed_mid_grade_the_submission_is_dispatched_again_after_its_lease_and_graded_once(
    celery_worker_app: Any, fake_lms: FakeLMS, grader_queue: Queue, lms_user: Any, settings: Any, tmp_path: Path
) -> None:
    fast_pipeline(settings)
    # The lease runs from the dispatch, before the grader process has even started: long enough to outlast
    # that start on a loaded machine, so that the reclaim below finds it still running.
    grader_queue.lease_seconds = 10
    grader_queue.save()
    with grader(grader_queue.name, "tests.e2e.graders:grade", tmp_path) as first:
        sub = submit(grader_queue, lms_user, fake_lms.callback_url(), lms_body(response="slow"))
        wait_for(lambda: (tmp_path / f"started-{sub.pk}").exists(), timeout=30, what="grading to start")
        sub.refresh_from_db()
        assert sub.status == Status.PULLED
        first_key, first_expiry = sub.lease_key, sub.lease_expires_at
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    # Nothing comes back while the lease lasts; once it has expired, the reclaim task hands the submission
    # out again (the test runs it directly instead of waiting for beat's 15 s schedule).
    assert lifecycle.reclaim_expired() == {"requeued": 0, "failed": 0}
    while timezone.now() <= first_expiry:
        time.sleep(0.1)
    # The next lease is long enough for a grader process to start up.
    Queue.objects.filter(pk=grader_queue.pk).update(lease_seconds=60)
    assert lifecycle.reclaim_expired() == {"requeued": 1, "failed": 0}
    wait_for(lambda: Submission.objects.filter(pk=sub.pk, status=Status.PULLED, attempts=2).exists(),
             what="dispatched again")  # fmt: skip
    second_key = Submission.objects.get(pk=sub.pk).lease_key
    assert second_key != first_key

    # A second grader picks up the new dispatch; the message the first one died holding has expired with
    # its lease and is dropped unrun. ("slow" grades at once once grading has been started before.)
    with grader(grader_queue.name, "tests.e2e.graders:grade", tmp_path):
        wait_for(lambda: fake_lms.delivered(), timeout=30, what="the grade at the LMS")
        time.sleep(1.0)

    # A late reply for the first dispatch is refused and changes nothing.
    late = json.dumps(expected_grade("7"))
    assert push.record_result(sub.pk, first_key, late, "late") is lifecycle.ResultOutcome.WRONG_KEY
    sub.refresh_from_db()
    assert sub.status == Status.DELIVERED
    assert json.loads(sub.grader_reply) == expected_grade("slow")
    assert len(fake_lms.callbacks) == 1
    assert json.loads(fake_lms.callbacks[0].body) == expected_grade("slow")
    reasons = list(sub.events.values_list("reason", flat=True))
    assert reasons == ["submitted", "dispatch", "lease_expired", "dispatch", "result", "scored", "delivered"]


def test_in_flight_cap_holds_while_a_grader_works_through_the_queue(
    celery_worker_app: Any, fake_lms: FakeLMS, grader_queue: Queue, lms_user: Any, settings: Any, tmp_path: Path
) -> None:
    fast_pipeline(settings)
    grader_queue.max_in_flight = 3
    grader_queue.save()
    for student in range(12):
        submit(grader_queue, lms_user, fake_lms.callback_url(student), lms_body(response="42"))
    wait_for(lambda: Submission.objects.filter(queue=grader_queue, status=Status.PULLED).count() == 3,
             what="three dispatched")  # fmt: skip
    time.sleep(0.5)
    assert Submission.objects.filter(queue=grader_queue, status=Status.PULLED).count() == 3
    assert Submission.objects.filter(queue=grader_queue, status=Status.QUEUED).count() == 9

    peak = 0
    with grader(grader_queue.name, "tests.e2e.graders:grade", tmp_path):
        deadline = time.monotonic() + 60
        while len(fake_lms.delivered()) < 12 and time.monotonic() < deadline:
            peak = max(peak, Submission.objects.filter(queue=grader_queue, status=Status.PULLED).count())
            time.sleep(0.02)
    assert len(fake_lms.delivered()) == 12
    assert peak <= 3
    # Every submission was leased once: the cap held work back, it did not cost attempts.
    assert set(Submission.objects.filter(queue=grader_queue).values_list("attempts", flat=True)) == {1}
    assert timezone.now() - Submission.objects.filter(queue=grader_queue).latest("updated_at").updated_at < timedelta(
        minutes=1
    )
