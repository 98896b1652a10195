"""Submissions brought to a state through the lifecycle, as the endpoints bring them there."""

from __future__ import annotations

from typing import Any

from grading import lifecycle
from grading.models import Submission
from tests.conftest import submit
from tests.lms import FakeLMS
from tests.xqclient import grade, lms_body


def graded_submission(queue: Any, lms_user: Any, grader_user: Any, callback_url: str, reply: str = "") -> Submission:
    submission = submit(queue, lms_user, callback_url=callback_url, body=lms_body())
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None
    outcome = lifecycle.accept_result(submission.pk, lease.key, reply or grade(), grader_user, [queue.pk])
    assert outcome is lifecycle.ResultOutcome.ACCEPTED
    return submission


def status_of(submission: Submission) -> str:
    return Submission.objects.values_list("status", flat=True).get(pk=submission.pk)


def returned(
    queue: Any, lms_user: Any, grader_user: Any, lms: FakeLMS, n: int, reply: str = "", first: int = 0
) -> list[int]:
    """``n`` submissions (of students ``first`` onwards) with a grader reply accepted (returned), oldest first."""
    ids = []
    for i in range(first, first + n):
        submission = submit(queue, lms_user, callback_url=lms.callback_url(student=i), body=lms_body(), lms_key=f"k{i}")
        lease = lifecycle.lease_next(queue, grader_user)
        assert lease is not None and lease.submission_id == submission.pk
        outcome = lifecycle.accept_result(submission.pk, lease.key, reply or grade(), grader_user, [queue.pk])
        assert outcome is lifecycle.ResultOutcome.ACCEPTED
        ids.append(submission.pk)
    return ids


def statuses(ids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Submission.objects.filter(pk__in=ids).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts
