"""Celery tasks of the grading pipeline: thin, idempotent, each calling one function of ``grading``.

What a task takes depends on its work: a submission id (deliver_result), a queue id (dispatch), a
submission id with its lease key (push_http, with the POST's attempt number; record_result, with the
grader's reply), or nothing (the scoring run over every reply waiting, and the periodic runs over every
queue). Messages are sent by ``grading.publish``, under its names. The function a task calls returns early
when the row is already past the state the task expects (or the lease key is no longer current), so a
duplicate or late message is harmless.
"""

from __future__ import annotations

from typing import Any

from celery_app import app
from grading import delivery, lifecycle, outage, publish, push

# Only database hiccups are retried by Celery. LMS delivery keeps its own retry schedule in the database
# (lifecycle.record_delivery), so that it survives restarts and shows in the submission's timeline.
TRANSIENT = outage.DATABASE_CONNECTION_ERRORS
COMMON: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
    "ignore_result": True,
}


# Scoring goes straight on to the first delivery attempt in the same task (no second task message); the time
# limits leave room for the POSTs. Later attempts, and failure notices, are deliver_result's.
@app.task(name=publish.SCORE_RUN_TASK, soft_time_limit=150, time_limit=180, **COMMON)
def score_returned() -> dict[str, int]:
    """A scoring run: every returned reply waiting (grading.lifecycle, "Scoring runs")."""
    return delivery.score_and_deliver_returned()


@app.task(name=publish.DELIVER_TASK, soft_time_limit=60, time_limit=90, **COMMON)
def deliver_result(submission_id: int) -> str | None:
    outcome = delivery.deliver(submission_id)
    return outcome.value if outcome else None


@app.task(name=publish.RECLAIM_TASK, soft_time_limit=120, time_limit=150, **COMMON)
def reclaim_expired_leases() -> dict[str, int]:
    return lifecycle.reclaim_expired()


@app.task(name=publish.SWEEP_TASK, soft_time_limit=120, time_limit=150, **COMMON)
def sweep_followups() -> dict[str, int]:
    return lifecycle.sweep_followups()


# --- Push modes (grading.push) ---------------------------------------------------------------------------


@app.task(name=publish.DISPATCH_TASK, soft_time_limit=120, time_limit=150, **COMMON)
def dispatch(queue_id: int) -> int:
    return push.dispatch(queue_id)


@app.task(name=publish.RECORD_TASK, soft_time_limit=20, time_limit=30, **COMMON)
def record_result(submission_id: int, submission_key: str, reply: str, grader: str = "") -> str:
    """A Celery grader's reply (``gradequeue_grader.protocol.reply_args``), sent through the broker."""
    return push.record_result(submission_id, submission_key, reply, grader).value


# The POST's own timeout is a setting; the time limit leaves room for it and for recording the outcome.
@app.task(name=publish.PUSH_HTTP_TASK, soft_time_limit=150, time_limit=180, **COMMON)
def push_http(submission_id: int, submission_key: str, attempt: int = 1) -> str:
    outcome, _delay = push.push_http(submission_id, submission_key, attempt)
    return outcome.value
