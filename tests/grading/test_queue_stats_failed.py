"""queue_stats' "could not be graded" count: the live failures counted from the rows, the delivered notices from
the metrics' roll-up, and their sum the same as counting every failed submission's row (requeue_failed's
candidates) at each step: a notice arriving, a delivered grade beside it, a requeue of each, a purge."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.utils import timezone

from grading import lifecycle, metrics, retention
from grading.models import MetricCounter, Queue, Status, Submission, SubmissionEvent
from grading.stats import NOTICES_DELIVERED, failed_submissions, queue_stats
from tests.conftest import submit

pytestmark = pytest.mark.django_db

ACTOR = "system:test"


def walk(pk: int, *steps: tuple[str, str, str], **updates: Any) -> None:
    for from_status, to_status, reason in steps:
        assert lifecycle.transition(pk, from_status, to_status, reason=reason, actor=ACTOR, followup=False, **updates)


def graded(queue: Queue, user: Any, n: int) -> int:
    pk = submit(queue, user, callback_url=f"http://127.0.0.1:9/cb/{n}", lms_key=f"key-{n}").pk
    walk(pk, ("queued", "pulled", "lease"), ("pulled", "returned", "result"), ("returned", "graded", "scored"))
    return pk


def failed(queue: Queue, user: Any, n: int) -> int:
    pk = submit(queue, user, callback_url=f"http://127.0.0.1:9/cb/{n}", lms_key=f"key-{n}").pk
    assert lifecycle.fail(pk, Status.QUEUED, reason="invalid_reply", why="the grader reply is not JSON", actor=ACTOR)
    return pk


def numbers(queue: Queue) -> tuple[int, int, int, int]:
    row = queue_stats([queue.name])[0]
    return row.waiting, row.leased, row.failed, row.dead_letter


def test_the_failed_count_follows_every_transition_in_and_out(queue: Any, lms_user: Any) -> None:
    notice = failed(queue, lms_user, 1)
    walk(notice, ("failed", "delivered", "delivered"))
    lost_notice = failed(queue, lms_user, 2)
    walk(lost_notice, ("failed", "dead_letter", "delivery_failed"))
    awaiting = failed(queue, lms_user, 3)
    grade = graded(queue, lms_user, 4)
    walk(grade, ("graded", "delivered", "delivered"))
    lost_grade = graded(queue, lms_user, 5)
    walk(lost_grade, ("graded", "dead_letter", "delivery_failed"))
    waiting = submit(queue, lms_user, callback_url="http://127.0.0.1:9/cb/6", lms_key="key-6").pk
    leased = submit(queue, lms_user, callback_url="http://127.0.0.1:9/cb/7", lms_key="key-7").pk
    walk(leased, ("queued", "pulled", "lease"), lease_expires_at=timezone.now() + timedelta(minutes=5))
    # A late answer for the delivered notice, recorded as delivery records it: the notice stays one.
    SubmissionEvent.objects.create(
        submission_id=notice,
        from_status="delivered",
        to_status="delivered",
        reason="late_answer",
        actor=ACTOR,
        created_at=timezone.now(),
    )

    # waiting 1, leased 1; failed: the delivered notice, the dead-lettered notice, the one awaiting its notice;
    # dead letters: the notice's and the grade's.
    assert numbers(queue) == (1, 1, 3, 2)
    assert failed_submissions().filter(queue=queue).count() == 3
    assert MetricCounter.objects.get(queue=queue, name=NOTICES_DELIVERED).value == 1.0

    # Requeueing the delivered grade takes nothing from the failures; requeueing the notice takes one.
    assert lifecycle.requeue(grade, actor=ACTOR)
    assert numbers(queue) == (2, 1, 3, 2)
    assert lifecycle.requeue(notice, actor=ACTOR)
    assert numbers(queue) == (3, 1, 2, 2)
    assert MetricCounter.objects.get(queue=queue, name=NOTICES_DELIVERED).value == 0.0

    # Graded again and failed again: its second notice counts once more.
    walk(notice, ("queued", "pulled", "lease"), ("pulled", "returned", "result"))
    assert lifecycle.fail(notice, Status.RETURNED, reason="invalid_reply", why="still not JSON", actor=ACTOR)
    walk(notice, ("failed", "delivered", "delivered"))
    assert numbers(queue) == (2, 1, 3, 2)
    assert failed_submissions().filter(queue=queue).count() == 3

    # Purged, the delivered notice leaves the count (and nothing else does).
    old = timezone.now() + timedelta(days=1)
    report = retention.purge(timedelta(hours=1), now=old)
    assert report.submissions == 1  # the one delivered submission left: the notice
    assert not Submission.objects.filter(pk=notice).exists()
    assert numbers(queue) == (2, 1, 2, 2)
    assert failed_submissions().filter(queue=queue).count() == 2
    assert MetricCounter.objects.get(queue=queue, name=NOTICES_DELIVERED).value == 0.0
    assert {awaiting, lost_notice} == set(failed_submissions().filter(queue=queue).values_list("pk", flat=True))
    assert {waiting, leased, lost_grade} <= set(Submission.objects.values_list("pk", flat=True))


def test_the_migration_starts_the_counter_from_the_events_already_rolled_up(queue: Any, lms_user: Any) -> None:
    """An installation upgraded with notices delivered, one of them requeued since, and one more delivered after
    the last roll-up: the migration counts what the watermark has passed, the next roll-up adds the rest."""
    migration = importlib.import_module("grading.migrations.0013_live_index_and_delivered_notices")
    first, second, third = (failed(queue, lms_user, n) for n in (1, 2, 3))
    for pk in (first, second):
        walk(pk, ("failed", "delivered", "delivered"))
    assert lifecycle.requeue(second, actor=ACTOR)
    graded_one = graded(queue, lms_user, 4)
    walk(graded_one, ("graded", "delivered", "delivered"))
    assert lifecycle.requeue(graded_one, actor=ACTOR)
    metrics.rollup()
    walk(third, ("failed", "delivered", "delivered"))  # after the roll-up
    MetricCounter.objects.filter(name=NOTICES_DELIVERED).delete()  # as before the upgrade

    migration.start_counter(apps, None)
    assert MetricCounter.objects.get(queue=queue, name=NOTICES_DELIVERED).value == 1.0  # first
    assert metrics.rollup() == 1
    assert MetricCounter.objects.get(queue=queue, name=NOTICES_DELIVERED).value == 2.0  # first and third
    assert queue_stats([queue.name])[0].failed == 2
    assert failed_submissions().filter(queue=queue).count() == 2
