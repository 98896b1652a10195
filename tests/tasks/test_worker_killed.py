"""A worker killed in the middle of an LMS delivery: the grade still arrives after recovery, and only a POST
that was at the LMS when the worker died is sent again."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from grading import lifecycle
from grading.models import Status, Submission
from tests.lms import Callback, FakeLMS
from tests.support.services import start_worker_process
from tests.support.states import graded_submission, status_of
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]

ROOT = Path(__file__).resolve().parents[2]


def test_worker_killed_during_delivery_grade_delivered_once_after_recovery(
    settings: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "DELIVERY_TIMEOUT": 1.0, "SWEEP_GRACE_SECONDS": 0.0}
    received, killed = threading.Event(), threading.Event()

    def stall_first(callback: Callback) -> None:
        if not received.is_set():
            received.set()
            killed.wait(30)

    # The stalled first request never completes from the LMS's side: it answers 503 after the kill.
    lms = FakeLMS(script=[503], on_request=stall_first).start()
    from celery_app import app

    app.control.purge()
    first = start_worker_process()
    second = None
    try:
        submission = graded_submission(queue, lms_user, grader_user, lms.callback_url())
        assert received.wait(60), "the worker never called the LMS"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed.set()
        assert status_of(submission) == Status.GRADED

        second = start_worker_process()

        def delivered() -> bool:
            lifecycle.sweep_followups()  # what beat runs periodically
            return status_of(submission) == Status.DELIVERED

        wait_for(delivered, timeout=60, what="delivery after the worker was killed")
        time.sleep(1.0)
        assert len(lms.delivered()) == 1
        assert Submission.objects.get(pk=submission.pk).events.filter(to_status=Status.DELIVERED).count() == 1
    finally:
        killed.set()
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        lms.stop()


def test_worker_killed_mid_batch_posts_again_only_the_grade_that_was_at_the_lms(
    settings: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    """A scoring run posts a batch of six grades; the LMS answers five at once and holds the sixth. The
    worker is SIGKILLed while the LMS holds it. The five it answered were recorded as they returned, so only
    the sixth is posted again after recovery (the window HTTP cannot close), with the same Idempotency-Key."""
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "DELIVERY_TIMEOUT": 1.0, "SWEEP_GRACE_SECONDS": 0.0}
    held, killed = threading.Event(), threading.Event()

    def hold_student_6(callback: Callback) -> None:
        if "/xqueue/6/" in callback.path and not held.is_set():
            held.set()
            killed.wait(60)

    lms = FakeLMS(on_request=hold_student_6).start()
    from celery_app import app

    app.control.purge()
    # Six replies returned before the worker starts: its first scoring run takes them as one batch.
    submissions = {
        student: graded_submission(queue, lms_user, grader_user, lms.callback_url(student)) for student in range(1, 7)
    }
    # A 30 s timeout: the held POST is still outstanding when the worker is killed, at most 10 s later.
    first = start_worker_process(delivery_timeout="30")
    second = None
    try:
        assert held.wait(60), "the worker never posted the sixth grade"
        wait_for(lambda: len(lms.callbacks) == 6, timeout=30, what="the batch's six POSTs")
        answered = [submissions[student] for student in range(1, 6)]
        # Recorded as they returned: the five answered grades become delivered while the sixth is held.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(status_of(s) != Status.DELIVERED for s in answered):
            time.sleep(0.05)
        before_kill = Counter(status_of(s) for s in submissions.values())
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed.set()
        assert before_kill == {Status.DELIVERED: 5, Status.GRADED: 1}
        assert not Submission.objects.get(pk=submissions[6].pk).events.filter(reason="delivery_retry").exists()

        # The killed run's claim on the sixth runs out (its guard, a time after the last renewal).
        held_pk = submissions[6].pk
        Submission.objects.filter(pk=held_pk).update(next_delivery_at=timezone.now())
        second = start_worker_process()

        def all_delivered() -> bool:
            lifecycle.sweep_followups()  # what beat runs periodically
            return status_of(submissions[6]) == Status.DELIVERED

        wait_for(all_delivered, timeout=60, what="the sixth grade's delivery after the kill")
        time.sleep(1.0)
        per_student = Counter(int(cb.path.split("/xqueue/")[1].split("/")[0]) for cb in lms.callbacks)
        assert per_student == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2}
        sixth = [cb.idempotency_key for cb in lms.callbacks if "/xqueue/6/" in cb.path]
        assert sixth[0] == sixth[1] != ""
        delivered_at = list(
            Submission.objects.get(pk=held_pk)
            .events.filter(to_status=Status.DELIVERED)
            .values_list("details__attempt", flat=True)
        )
        assert delivered_at == [2]
    finally:
        killed.set()
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        lms.stop()
