"""Periodic work: the schedule synced into django-celery-beat, and reclaiming/sweeping run twice at once."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from grading import lifecycle, schedule
from grading.models import Status, Submission, SubmissionEvent
from tests.conftest import submit


@pytest.mark.django_db
def test_sync_schedule_is_idempotent_and_disables_what_it_no_longer_defines() -> None:
    out = StringIO()
    call_command("sync_schedule", stdout=out)
    assert f"{len(schedule.SCHEDULE)} created" in out.getvalue()
    out = StringIO()
    call_command("sync_schedule", stdout=out)
    assert "0 created, 0 updated, 0 disabled" in out.getvalue()
    tasks = dict(PeriodicTask.objects.values_list("name", "task"))
    assert tasks["gradequeue: reclaim expired leases"] == "grading.reclaim_expired_leases"
    assert tasks["gradequeue: sweep lost follow-ups"] == "grading.sweep_followups"
    assert PeriodicTask.objects.get(name="gradequeue: reclaim expired leases").interval.every == 15

    PeriodicTask.objects.filter(name="gradequeue: sweep lost follow-ups").update(enabled=False)
    PeriodicTask.objects.create(
        name="gradequeue: retired job", task="grading.old", interval=PeriodicTask.objects.first().interval
    )
    counts = schedule.sync()
    assert counts == {"created": 0, "updated": 1, "disabled": 1}
    assert not PeriodicTask.objects.get(name="gradequeue: retired job").enabled


@pytest.mark.django_db(transaction=True)
def test_two_reclaimers_at_once_reclaim_each_expired_lease_once(queue: Any, lms_user: Any, grader_user: Any) -> None:
    for i in range(60):
        submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/{i}")
    with time_machine.travel(timezone.now(), tick=True) as clock:
        while lifecycle.lease_next(queue, grader_user):
            pass
        clock.shift(timedelta(seconds=301))
        results: list[dict[str, int]] = []
        start = threading.Barrier(4)

        def reclaimer() -> None:
            try:
                start.wait()
                results.append(lifecycle.reclaim_expired())
            finally:
                connection.close()

        threads = [threading.Thread(target=reclaimer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sum(r["requeued"] for r in results) == 60
    assert SubmissionEvent.objects.filter(reason="lease_expired").count() == 60
    assert Submission.objects.filter(status=Status.QUEUED).count() == 60


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_of_one_grade_at_once_post_it_once(
    queue: Any, lms_user: Any, grader_user: Any, fake_lms: Any
) -> None:
    submission = submit(queue, lms_user, callback_url=fake_lms.callback_url())
    lease = lifecycle.lease_next(queue, grader_user)
    lifecycle.accept_result(
        submission.pk, lease.key, '{"correct": true, "score": 1, "msg": ""}', grader_user, [queue.pk]
    )
    assert lifecycle.score_and_claim(submission.pk) is not None
    # The run that scored it died before posting: once its claim has run out, the grade is due again.
    Submission.objects.filter(pk=submission.pk).update(next_delivery_at=timezone.now())
    from grading import delivery

    start = threading.Barrier(4)

    def deliverer() -> None:
        try:
            start.wait()
            delivery.deliver(submission.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliverer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(fake_lms.callbacks) == 1
    assert Submission.objects.get(pk=submission.pk).status == Status.DELIVERED
