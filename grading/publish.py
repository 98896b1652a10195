"""Every task message gradequeue sends goes out through this module, under a name defined here.

The names a grader shares (:data:`GRADE_TASK`, :data:`RECORD_TASK`) are ``gradequeue_grader.protocol``'s,
the one definition the grader distribution imports too; the others are the server's own, registered by
``tasks/``. ``tests/tasks/test_task_names.py`` holds every name published here and every periodic schedule
entry to a task the Celery app registers.

Publishing never raises. The database, not the broker, is the record of every submission: a message that
cannot be sent (the broker is down, or was a moment ago) is counted by ``grading.outage.broker``, which logs
one line per outage, and the work is found again by the periodic sweep (``lifecycle.sweep_followups``) or,
for push leases, by reclaiming expired leases. Work that a transaction creates is published only after it
commits (:func:`after_commit`), so that no worker reads a row before it exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from gradequeue_grader import protocol
from grading import outage
from grading.models import PUSH_MODES

# Shared with graders: a grade message to them, their reply to gradequeue.
GRADE_TASK = protocol.GRADE_TASK
RECORD_TASK = protocol.RECORD_TASK
# The server's own tasks (tasks/grading.py, tasks/ops.py).
SCORE_RUN_TASK = "grading.score_returned"
DELIVER_TASK = "grading.deliver_result"
DISPATCH_TASK = "grading.dispatch"
PUSH_HTTP_TASK = "grading.push_http"
RECLAIM_TASK = "grading.reclaim_expired_leases"
SWEEP_TASK = "grading.sweep_followups"
SAMPLE_DEPTH_TASK = "grading.sample_queue_depth"
ROLLUP_METRICS_TASK = "grading.rollup_metrics"

# Every name this module sends a message under. RECORD_TASK is only received: graders send it.
PUBLISHED = (SCORE_RUN_TASK, DELIVER_TASK, DISPATCH_TASK, PUSH_HTTP_TASK, GRADE_TASK)


def send(name: str, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any) -> bool:
    """Publish one task message now: True if the broker took it.

    False when the broker could not be reached, or was skipped because it could not be a moment ago
    (``GRADEQUEUE_BROKER_RETRY_SECONDS``); the caller's work is then the sweep's. ``options`` are
    ``Celery.send_task``'s (countdown, expires, queue).
    """
    from celery_app import app
    from grading.conf import setting

    broker = outage.broker
    broker.retry_seconds = float(setting("BROKER_RETRY_SECONDS"))
    if not broker.allow():
        return False
    try:
        app.send_task(name, args=args, kwargs=kwargs, **options)
    except Exception as exc:
        broker.failed(exc)
        return False
    broker.succeeded()
    return True


def after_commit(name: str, *, args: list[Any] | None = None, **options: Any) -> None:
    """:func:`send`, once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(name, args=args, **options))


def unsent_reason() -> str:
    """Why the last :func:`send` that returned False sent nothing, for a submission's timeline."""
    return outage.broker.last_error or "the broker could not be reached"


# --- What each message asks for ----------------------------------------------------------------------------


def score_run() -> bool:
    """Ask for a scoring run (``grading.delivery.score_and_deliver_returned``): every returned reply waiting."""
    return send(SCORE_RUN_TASK)


def deliver(submission_id: int, countdown: float | None = None) -> bool:
    """Ask for the next LMS delivery attempt of a graded or failed submission."""
    return send(DELIVER_TASK, args=[submission_id], countdown=countdown)


def deliver_after_commit(submission_id: int, countdown: float | None = None) -> None:
    after_commit(DELIVER_TASK, args=[submission_id], countdown=countdown)


def dispatch(queue_id: int) -> bool:
    """Ask a worker to lease and send out the waiting submissions of a push-mode queue (idempotent)."""
    return send(DISPATCH_TASK, args=[queue_id])


def dispatch_after_commit(queue_id: int, mode: str) -> None:
    """After commit, wake the dispatcher of ``queue_id`` if it is a push-mode queue (``mode``)."""
    if mode in PUSH_MODES:
        transaction.on_commit(lambda: dispatch(queue_id))


def grade(message: protocol.GradeMessage, broker_queue: str, expires: datetime) -> bool:
    """Send a submission of a celery-mode queue to its graders (``gradequeue_grader.protocol``).

    A message still waiting when its lease ends is dropped by the grader's worker unrun: by then the
    submission has been (or will be) dispatched again under a new key.
    """
    return send(GRADE_TASK, kwargs=dict(message), queue=broker_queue, expires=expires)


def push_http(
    submission_id: int, key: str, attempt: int, *, countdown: float | None = None, expires: datetime | None = None
) -> bool:
    """Ask a worker to POST a leased submission to its http-mode queue's grader (attempt ``attempt``)."""
    return send(PUSH_HTTP_TASK, args=[submission_id, key, attempt], countdown=countdown, expires=expires)
