"""Push-mode queues: gradequeue leases each submission to a grader and sends it out, instead of waiting
for a grader to pull it.

A queue's ``mode`` chooses how:

``celery``
    Each submission becomes a Celery task message (``gradequeue_grader.protocol.GRADE_TASK``) on the broker
    queue named after the gradequeue queue. A grader is a Celery worker consuming that queue (the
    ``gradequeue-grader`` distribution in ``grader/`` ships one); it hands its reply back through the broker
    as a ``protocol.RECORD_TASK`` task message on gradequeue's own queue. Graders need broker access only, no HTTP.
``http``
    Each submission is POSTed to ``Queue.push_url`` as the reference's raw JSON
    ``{"xqueue_body": ..., "xqueue_files": ...}``; the HTTP 200 body is the grade. Transient failures are
    retried with back-off; after ``PUSH_HTTP_ATTEMPTS`` the submission fails and the LMS gets the notice.

Both use the pull protocol's lease: dispatching leases the submission (a fresh key, an expiry, one attempt
used), a reply is taken only with the current key (``lifecycle.accept_result``), and an expired lease is
handed out again by ``lifecycle.reclaim_expired`` — a grader that dies mid-grade costs one lease, and its
late reply is refused. The grade then goes through the same scoring and LMS delivery tasks as pull mode.

``Queue.max_in_flight`` caps how many submissions of a queue are leased at once. At the cap, the rest stay
queued; the dispatcher is woken again when a reply is taken, a push fails or a lease expires, and the
sweep (``lifecycle.sweep_followups``) wakes it for any push queue whose work has waited too long.
"""

from __future__ import annotations

import enum
import json
import logging
import time

import requests
from django.db import transaction

from gradequeue_grader.protocol import ReplyRoute, grade_message
from grading import files, lifecycle, outage, publish, secretbox
from grading.conf import setting
from grading.models import Queue, QueueMode, Status, Submission

logger = logging.getLogger("grading.push")

DISPATCH_ACTOR = "system:dispatch"

_session = requests.Session()


def broker_queue_name(queue: Queue) -> str:
    """The broker queue a celery-mode queue's graders consume: the gradequeue queue's own name."""
    return queue.name


def _file_urls(stored: dict[str, str]) -> str:
    # A push has no request to take the host from: graders download from the configured public address.
    base_url = setting("PUBLIC_BASE_URL") or "http://127.0.0.1:18040/"
    return json.dumps(files.urls_for(stored, base_url))


def reply_route() -> ReplyRoute:
    """Where a Celery grader sends its reply: gradequeue's own task queue, through its direct exchange.

    Celery workers declare that exchange, bound to the queue under the queue's name, so a grader can
    publish to it without declaring anything: it needs write permission on that one exchange only.
    """
    from celery_app import app

    conf = app.conf
    return {
        "exchange": conf.task_default_exchange or conf.task_default_queue,
        "routing_key": conf.task_default_routing_key or conf.task_default_queue,
    }


# --- Dispatch ------------------------------------------------------------------------------------------


def _lease_within_cap(queue: Queue) -> lifecycle.Lease | None:
    with transaction.atomic():
        if queue.max_in_flight is not None:
            # Serialise this queue's dispatchers while they count, so that two cannot both take the last slot.
            Queue.objects.select_for_update().filter(pk=queue.pk).values_list("pk").get()
            in_flight = Submission.objects.filter(queue_id=queue.pk, status=Status.PULLED).count()
            if in_flight >= queue.max_in_flight:
                return None
        return lifecycle.lease_next(queue, None, reason="dispatch", actor=DISPATCH_ACTOR)


def _send(queue: Queue, lease: lifecycle.Lease) -> bool:
    """Publish a leased submission to its grader (grading.publish): False if the broker did not take it."""
    if queue.mode == QueueMode.CELERY:
        message = grade_message(lease.submission_id, lease.key, lease.body, _file_urls(lease.files), reply_route())
        return publish.grade(message, broker_queue_name(queue), lease.expires_at)
    return publish.push_http(lease.submission_id, lease.key, 1, expires=lease.expires_at)


def dispatch(queue_id: int) -> int:
    """Lease the waiting submissions of a push-mode queue, up to its in-flight cap, and send each out.

    Returns how many were sent. Safe to run any number of times at once: leasing is the pull protocol's
    (no submission is leased twice) and the cap is counted under a lock on the queue row.
    """
    queue = Queue.objects.filter(pk=queue_id).first()
    if queue is None or queue.mode not in lifecycle.PUSH_MODES:
        return 0
    if queue.mode == QueueMode.HTTP and not queue.push_url:
        logger.warning("queue %s is in http mode but has no push URL; its submissions wait", queue.name)
        return 0
    sent = 0
    batch = int(setting("PUSH_DISPATCH_BATCH"))
    while sent < batch:
        lease = _lease_within_cap(queue)
        if lease is None:
            return sent
        if not _send(queue, lease):
            # The broker is unreachable (grading.publish logs the outage once): give the submission back at
            # once, with its attempt, rather than leave it leased to nobody until the lease runs out. The
            # sweep dispatches it again later.
            lifecycle.release_lease(
                lease.submission_id,
                lease.key,
                reason="dispatch_failed",
                actor=DISPATCH_ACTOR,
                why=publish.unsent_reason()[:500],
                refund=True,
            )
            return sent
        sent += 1
    # More may be waiting: let a fresh task carry on, so that one queue cannot hold a worker for long.
    publish.dispatch(queue.pk)
    return sent


def _take_reply(
    submission_id: int, key: str, reply: object, queue_id: int, actor: str
) -> lifecycle.ResultOutcome | None:
    """``lifecycle.accept_result`` for a push grader's reply, which may be anything at all.

    A reply the database cannot store (a NUL for PostgreSQL, a value that is no text from a foreign message)
    or that makes taking it raise otherwise fails the submission at once, while the lease is still its own:
    the reason in the timeline, an ERROR log line, the notice to the LMS; the grader is not asked again for
    what it would only send again (None then). Database outages are raised, for the task's retries.
    """
    try:
        if not isinstance(reply, str):
            raise TypeError(f"the reply is {type(reply).__name__}, not text")
        return lifecycle.accept_result(submission_id, key, reply, None, [queue_id], actor=actor)
    except outage.DATABASE_CONNECTION_ERRORS:
        raise
    except Exception as exc:
        lifecycle.fail_after_error(
            submission_id,
            Status.PULLED,
            reason="invalid_reply",
            what="taking the grader's reply",
            exc=exc,
            actor=actor,
            where={"lease_key": key},
        )
        return None


def _wake_if_capped(queue_id: int, max_in_flight: int | None) -> None:
    # Without a cap every waiting submission was already dispatched; with one, a slot has just freed up.
    if max_in_flight is not None:
        transaction.on_commit(lambda: publish.dispatch(queue_id))


# --- Celery-queue graders ------------------------------------------------------------------------------


def record_result(submission_id: int, key: str, reply: str, grader: str = "") -> lifecycle.ResultOutcome:
    """Take a Celery grader's reply (sent through the broker) for the submission's current lease."""
    row = (
        Submission.objects.filter(pk=submission_id, queue__mode=QueueMode.CELERY)
        .values_list("queue_id", "queue__max_in_flight")
        .first()
    )
    if row is None:
        logger.warning("reply for unknown submission %s refused", submission_id)
        return lifecycle.ResultOutcome.NO_SUCH_SUBMISSION
    queue_id, cap = row
    actor = f"grader:celery:{grader}"[:160] if grader else "grader:celery"
    outcome = _take_reply(submission_id, key, reply, queue_id, actor)
    if outcome is None:
        _wake_if_capped(queue_id, cap)
        return lifecycle.ResultOutcome.WRONG_KEY
    if outcome is lifecycle.ResultOutcome.ACCEPTED:
        _wake_if_capped(queue_id, cap)
    elif outcome is lifecycle.ResultOutcome.WRONG_KEY:
        logger.info("reply for submission %s refused: not its current lease (late or stale)", submission_id)
    return outcome


# --- HTTP push -----------------------------------------------------------------------------------------


class PushOutcome(enum.Enum):
    GRADED = "graded"  # the grader answered 200 and the reply was taken
    RETRY = "retry"  # the next POST is scheduled
    REQUEUED = "requeued"  # the next POST could not be scheduled: the submission is back in its queue
    FAILED = "failed"
    STALE = "stale"  # the lease this push was for is over: nothing to do


def push_backoff(attempt: int) -> float:
    """Wait before POST number ``attempt + 1``: exponential from the base, capped, no jitter needed (one
    submission per task)."""
    base = float(setting("PUSH_HTTP_BACKOFF_BASE"))
    return min(float(setting("PUSH_HTTP_BACKOFF_CAP")), base * (2 ** (attempt - 1)))


def push_http(submission_id: int, key: str, attempt: int) -> tuple[PushOutcome, float | None]:
    """POST a leased submission to its queue's grader (attempt number ``attempt``) and act on the answer."""
    row = (
        Submission.objects.filter(pk=submission_id, status=Status.PULLED, lease_key=key, queue__mode=QueueMode.HTTP)
        .values_list(
            "body",
            "files",
            "queue_id",
            "queue__push_url",
            "queue__push_username",
            "queue__push_password",
            "queue__max_in_flight",
        )
        .first()
    )
    if row is None:
        return PushOutcome.STALE, None
    body, stored, queue_id, url, username, sealed_password, cap = row
    try:
        password = secretbox.open_sealed(sealed_password)
    except secretbox.CannotOpen as exc:
        # No POST without the grader's password; a new key will not appear by retrying.
        logger.error("push submission=%s: the queue's push password %s", submission_id, exc)
        if lifecycle.fail_lease(
            submission_id, key, reason="push_failed", why=f"HTTP push: the push password {exc}", actor="system:push"
        ):
            _wake_if_capped(queue_id, cap)
            return PushOutcome.FAILED, None
        return PushOutcome.STALE, None
    payload = json.dumps({"xqueue_body": body, "xqueue_files": _file_urls(stored or {})})
    started = time.monotonic()
    http_status: int | None = None
    text = ""
    error = ""
    try:
        # Raw JSON bytes with no Content-Type, like the reference: graders written for it read the body.
        response = _session.post(
            url,
            data=payload.encode("utf-8"),
            auth=(username, password) if username else None,
            timeout=float(setting("PUSH_HTTP_TIMEOUT")),
            allow_redirects=False,
        )
        http_status = response.status_code
        text = response.text
        response.close()
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = int((time.monotonic() - started) * 1000)
    logger.info(
        "push submission=%s attempt=%s http_status=%s duration_ms=%s%s",
        submission_id,
        attempt,
        http_status,
        duration_ms,
        f" error={error}" if error else "",
    )

    if http_status == 200:
        outcome = _take_reply(submission_id, key, text, queue_id, "grader:http")
        if outcome is None:
            _wake_if_capped(queue_id, cap)
            return PushOutcome.FAILED, None
        if outcome is not lifecycle.ResultOutcome.ACCEPTED:
            return PushOutcome.STALE, None  # the lease ended while the grader was working
        _wake_if_capped(queue_id, cap)
        return PushOutcome.GRADED, None
    why = error or f"the grader answered HTTP {http_status}"
    if lifecycle.is_transient(http_status) and attempt < int(setting("PUSH_HTTP_ATTEMPTS")):
        delay = push_backoff(attempt)
        if publish.push_http(submission_id, key, attempt + 1, countdown=delay):
            return PushOutcome.RETRY, delay
        # The broker did not take the next POST's message. Left leased, the submission would wait for its
        # lease to expire; given back to its queue now, the sweep dispatches it again once the broker answers
        # (the database is the schedule). Celery's own retry (self.retry) is no help: it publishes the same
        # way and, when that fails, rejects the running message without requeueing it. The lease's attempt
        # stays used: the grader was asked.
        if lifecycle.release_lease(
            submission_id,
            key,
            reason="push_retry_unsent",
            actor="system:push",
            why=f"HTTP push: {why}; POST {attempt + 1} could not be scheduled: {publish.unsent_reason()}"[:500],
            refund=False,
        ):
            return PushOutcome.REQUEUED, None
        return PushOutcome.STALE, None
    if lifecycle.is_transient(http_status):
        why = f"{why} (after {attempt} attempts)"
    if lifecycle.fail_lease(
        submission_id, key, reason="push_failed", why=f"HTTP push: {why}"[:500], actor="system:push"
    ):
        _wake_if_capped(queue_id, cap)
        return PushOutcome.FAILED, None
    return PushOutcome.STALE, None
