"""queue_stats and requeue_failed: their output, their effect, and their --help."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from grading import lifecycle
from grading.models import Queue, QueueGrant, Role, Status, Submission, SubmissionEvent
from tests.conftest import submit
from tests.xqclient import grade

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)


def run(*args: str, **opts: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **opts)
    return out.getvalue()


def help_text(name: str) -> str:
    return load_command_class("grading", name).create_parser("manage.py", name).format_help()


def dead_letter(queue: Queue, lms_user: Any, grader: Any, student: int) -> Submission:
    s = submit(queue, lms_user, f"http://127.0.0.1:9/cb/{student}")
    lease = lifecycle.lease_next(queue, grader)
    assert lease is not None and lease.submission_id == s.pk
    lifecycle.accept_result(s.pk, lease.key, grade(), grader, [queue.pk])
    claim = lifecycle.score_and_claim(s.pk)
    assert claim is not None
    assert (
        lifecycle.record_delivery(claim, http_status=404, error="", duration_ms=3)[0] == lifecycle.DeliveryOutcome.DEAD
    )
    return s


@pytest.fixture
def busy(queue: Queue, other_queue: Queue, lms_user: Any, grader_user: Any) -> dict[str, Submission]:
    """test-123: two waiting (the oldest since T0), one leased, one failed. other-queue: one dead letter."""
    QueueGrant.objects.create(user=grader_user, queue=other_queue, role=Role.GRADER)
    with time_machine.travel(T0, tick=False) as clock:
        leased = submit(queue, lms_user, "http://127.0.0.1:9/cb/1")
        failed = submit(queue, lms_user, "http://127.0.0.1:9/cb/2")
        waiting = submit(queue, lms_user, "http://127.0.0.1:9/cb/3")
        clock.shift(60)
        newer = submit(queue, lms_user, "http://127.0.0.1:9/cb/4")
        assert lifecycle.lease_next(queue, grader_user).submission_id == leased.pk
        assert lifecycle.fail_with_notice(failed.pk, actor="test")
        dead = dead_letter(other_queue, lms_user, grader_user, 5)
    return {"leased": leased, "failed": failed, "waiting": waiting, "newer": newer, "dead": dead}


# --- queue_stats -------------------------------------------------------------------------------------


def test_queue_stats_prints_an_aligned_table_per_queue(busy: dict[str, Submission]) -> None:
    with time_machine.travel(T0 + timedelta(minutes=5, seconds=7), tick=False):
        out = run("queue_stats")
    assert out.splitlines() == [
        "QUEUE        WAITING  LEASED  OLDEST WAITING  FAILED  DEAD LETTERS",
        "other-queue        0       0               -       0             1",
        "test-123           2       1           5m07s       1             0",
    ]


def test_queue_stats_for_one_queue_as_json(busy: dict[str, Submission]) -> None:
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        rows = json.loads(run("queue_stats", "--queue", "test-123", "--json"))
    assert rows == [
        {
            "queue": "test-123",
            "waiting": 2,
            "leased": 1,
            "oldest_waiting_seconds": 7200.0,
            "failed": 1,
            "dead_letter": 0,
        }
    ]


def test_queue_stats_refuses_an_unknown_queue(queue: Queue) -> None:
    with pytest.raises(CommandError, match="No queue named nope"):
        run("queue_stats", "--queue", "nope")


def test_queue_stats_help_explains_each_column() -> None:
    text = " ".join(help_text("queue_stats").split())
    for phrase in (
        "waiting for a grader",
        "leased",
        "oldest waiting",
        "failed",
        "dead letters",
        "--json",
        "--queue NAME",
    ):
        assert phrase in text


# --- requeue_failed ----------------------------------------------------------------------------------


def test_requeue_failed_dry_run_lists_and_changes_nothing(busy: dict[str, Submission]) -> None:
    out = run("requeue_failed", "--dry-run")
    failed = busy["failed"]
    assert out.splitlines() == [
        "Would requeue 1 submission(s):",
        f"  #{failed.pk}  test-123  failed  failed by an operator",
    ]
    assert Submission.objects.get(pk=failed.pk).status == Status.FAILED


def test_requeue_failed_puts_failed_and_already_notified_submissions_back_in_their_queue(
    busy: dict[str, Submission], lms_user: Any, queue: Queue
) -> None:
    # A failure notice that already reached the LMS is requeued too: the student gets a real grade later.
    notified = submit(queue, lms_user, "http://127.0.0.1:9/cb/9")
    assert lifecycle.fail_with_notice(notified.pk, actor="test")
    claim = lifecycle.claim_delivery(notified.pk)
    lifecycle.record_delivery(claim, http_status=200, error="", duration_ms=1)
    assert Submission.objects.get(pk=notified.pk).status == Status.DELIVERED

    out = run("requeue_failed")
    assert out.strip() == f"Requeued 2 submission(s): #{busy['failed'].pk}, #{notified.pk}"
    for pk in (busy["failed"].pk, notified.pk):
        s = Submission.objects.get(pk=pk)
        assert (s.status, s.failure_reason, s.attempts) == (Status.QUEUED, "", 0)
        last = SubmissionEvent.objects.filter(submission_id=pk).last()
        assert (last.reason, last.actor) == ("requeue", "command:requeue_failed")
    # The dead letter was graded fine (only its delivery failed): not a grading failure, left alone.
    assert Submission.objects.get(pk=busy["dead"].pk).status == Status.DEAD_LETTER
    assert run("requeue_failed").strip() == "Requeued 0 submission(s)"


def test_requeue_failed_only_touches_the_named_queue_and_the_recent_window(
    busy: dict[str, Submission], other_queue: Queue, lms_user: Any
) -> None:
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        recent = submit(other_queue, lms_user, "http://127.0.0.1:9/cb/7")
        lifecycle.fail_with_notice(recent.pk, actor="test")
        assert run("requeue_failed", "--since", "2h", "--dry-run").splitlines()[0] == "Would requeue 1 submission(s):"
        out = run("requeue_failed", "--queue", "other-queue", "--since", "2h")
    assert out.strip() == f"Requeued 1 submission(s): #{recent.pk}"
    assert Submission.objects.get(pk=busy["failed"].pk).status == Status.FAILED  # other queue, and too old


def test_requeue_failed_rejects_a_bad_duration_and_an_unknown_queue(queue: Queue) -> None:
    with pytest.raises(CommandError, match="not a duration"):
        run("requeue_failed", "--since", "two hours")
    with pytest.raises(CommandError, match="No queue named nope"):
        run("requeue_failed", "--queue", "nope")


def test_requeue_failed_help_says_what_it_picks_up_and_how_to_try_it() -> None:
    text = " ".join(help_text("requeue_failed").split())
    for phrase in ("could not be graded", "--dry-run", "--queue NAME", "--since DURATION", "Example:"):
        assert phrase in text
