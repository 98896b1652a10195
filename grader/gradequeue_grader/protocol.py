"""The messages a Celery-queue grader and gradequeue exchange: the one definition both sides import.

gradequeue publishes each submission of a ``celery``-mode queue as a :data:`GRADE_TASK` task message whose
keyword arguments are a :class:`GradeMessage`, on the broker queue named after the gradequeue queue. The
grader replies with a :data:`RECORD_TASK` task message whose positional arguments are :func:`reply_args`, to
the route the grade message's ``reply_to`` names (:data:`DEFAULT_REPLY_TO` when it names none).

This module imports nothing beyond the standard library, so that the server and a grader machine (which
has no Django) share it.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

GRADE_TASK = "gradequeue.grade"
RECORD_TASK = "grading.record_result"


class ReplyRoute(TypedDict):
    """Where a reply goes: gradequeue's task exchange and the routing key of its queue."""

    exchange: str
    routing_key: str


# Where replies go when a message does not say (messages from gradequeue always do).
DEFAULT_REPLY_TO: ReplyRoute = {"exchange": "gradequeue", "routing_key": "gradequeue"}


class GradeMessage(TypedDict):
    """The keyword arguments of a :data:`GRADE_TASK` message."""

    submission_id: int
    # The key of the submission's current lease: a reply is taken only with it.
    submission_key: str
    # The LMS's ``xqueue_body``, as it sent it.
    xqueue_body: str
    # JSON text ``{name: url}`` of the submission's files.
    xqueue_files: NotRequired[str]
    reply_to: NotRequired[ReplyRoute]


def grade_message(
    submission_id: int, submission_key: str, xqueue_body: str, xqueue_files: str, reply_to: ReplyRoute
) -> GradeMessage:
    """The keyword arguments gradequeue sends with :data:`GRADE_TASK`."""
    return {
        "submission_id": submission_id,
        "submission_key": submission_key,
        "xqueue_body": xqueue_body,
        "xqueue_files": xqueue_files,
        "reply_to": reply_to,
    }


def reply_args(submission_id: int, submission_key: str, reply: str, grader: str) -> list[int | str]:
    """The positional arguments of a :data:`RECORD_TASK` reply: the submission, its lease key, the grade as
    JSON text ``{"correct", "score", "msg"}`` and the grader's name (shown in the event timeline)."""
    return [submission_id, submission_key, reply, grader]
