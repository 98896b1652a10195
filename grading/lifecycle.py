"""The submission lifecycle: every change of ``Submission.status`` happens here and nowhere else.

A transition is a conditional UPDATE (``WHERE id = … AND status = <expected>``) that must change exactly
one row, plus an event row in the same transaction. Losing a race is normal: the caller gets ``False``
(or ``None``) and moves on. Follow-up work (scoring, LMS delivery, push dispatch) is published
(``grading.publish``) only after the transaction commits; if the broker is unreachable at that moment,
``sweep_followups`` finds the row later, because the database, not the broker, is the record of every
submission.

How a submission moves::

    queued ──lease──▶ pulled ──result──▶ returned ──score──▶ graded ──deliver──▶ delivered
      ▲                 │                   │                  │ ▲
      └──lease expired──┘                   └──bad reply──▶ failed ──deliver──▶ delivered
                        └──lease expired max_attempts times──▶ failed
    graded/failed ──delivery gave up──▶ dead_letter ──redeliver──▶ graded/failed
    graded ──posting it raised──▶ failed (the notice instead);  scoring raised ──▶ failed

A reply, a grade or a notice that makes scoring or delivery raise fails that one submission (its reason in
the timeline, an ERROR log line, the notice to the LMS) and the run carries on with the others.

plus ``superseded`` (a newer submission for the same LMS callback, queue and LMS account) and ``cancelled``
(an operator).
A submission taken over from openedx/xqueue (``import_submission``) starts in ``queued``, or in ``returned``
when xqueue holds a grader reply that the LMS never acknowledged: that reply is delivered, not regraded.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import random
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q, Subquery, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from grading import grades, outage, publish, scoring_signal
from grading.conf import policy_for, setting
from grading.models import PUSH_MODES, Queue, Status, Submission, SubmissionEvent, callback_digest

logger = logging.getLogger("grading.lifecycle")

# Every allowed edge. A self-edge records a delivery retry without changing the status.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.PULLED, Status.FAILED, Status.SUPERSEDED, Status.CANCELLED}),
    Status.PULLED: frozenset({Status.QUEUED, Status.RETURNED, Status.FAILED, Status.SUPERSEDED, Status.CANCELLED}),
    Status.RETURNED: frozenset({Status.GRADED, Status.FAILED, Status.SUPERSEDED, Status.CANCELLED}),
    # graded -> failed: delivering the grade raised (not an HTTP answer): the LMS is sent the notice instead.
    Status.GRADED: frozenset(
        {Status.GRADED, Status.FAILED, Status.DELIVERED, Status.DEAD_LETTER, Status.SUPERSEDED, Status.CANCELLED}
    ),
    Status.FAILED: frozenset(
        {
            Status.FAILED,
            Status.DELIVERED,
            Status.DEAD_LETTER,
            Status.QUEUED,
            Status.SUPERSEDED,
            Status.CANCELLED,
        }
    ),
    Status.DELIVERED: frozenset({Status.QUEUED}),
    Status.DEAD_LETTER: frozenset({Status.GRADED, Status.FAILED, Status.QUEUED, Status.SUPERSEDED, Status.CANCELLED}),
    Status.SUPERSEDED: frozenset(),
    Status.CANCELLED: frozenset(),
}

# Submissions in these states still owe the student a grade: a newer submission supersedes them.
UNFINISHED = (
    Status.QUEUED,
    Status.PULLED,
    Status.RETURNED,
    Status.GRADED,
    Status.FAILED,
    Status.DEAD_LETTER,
)


class InvalidTransition(Exception):
    pass


def check_edge(from_status: str, to_status: str) -> None:
    if Status(to_status) not in TRANSITIONS[Status(from_status)]:
        raise InvalidTransition(f"{from_status} → {to_status} is not an allowed transition")


def actor_of(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "anonymous"
    return f"user:{user.get_username()}"


def _record(
    submission_id: int,
    from_status: str,
    to_status: str,
    reason: str,
    actor: str,
    now: datetime,
    details: dict,
    queue: str | None = None,
) -> None:
    SubmissionEvent.objects.create(
        submission_id=submission_id,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        actor=actor,
        created_at=now,
        details=details,
    )
    log_transition(submission_id, from_status, to_status, reason, actor, queue or details.get("queue"))


def queue_name_of(submission_id: int) -> str | None:
    return Submission.objects.filter(pk=submission_id).values_list("queue__name", flat=True).first()


def log_transition(
    submission_id: int, from_status: str, to_status: str, reason: str, actor: str, queue: str | None = None
) -> None:
    """One structured log line per transition (LOG_FORMAT=json turns the extra fields into JSON keys)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    queue = queue or queue_name_of(submission_id)
    logger.info(
        "transition submission=%s queue=%s %s->%s reason=%s actor=%s",
        submission_id,
        queue,
        from_status or "-",
        to_status,
        reason,
        actor,
        extra={
            "submission_id": submission_id,
            "queue": queue,
            "from": from_status,
            "to": str(to_status),
            "reason": reason,
            "actor": actor,
        },
    )


def transition(
    submission_id: int,
    from_status: str,
    to_status: str,
    *,
    reason: str,
    actor: str,
    details: dict | None = None,
    where: dict[str, Any] | None = None,
    now: datetime | None = None,
    followup: bool = True,
    queue_name: str | None = None,
    **updates: Any,
) -> bool:
    """Move one submission from ``from_status`` to ``to_status`` if it is still in ``from_status``.

    Returns whether this call made the change. ``where`` adds conditions to the UPDATE (a lease key, a
    delivery attempt number) so that a stale actor cannot act on a newer state. ``followup=False`` is for a
    caller that carries on with the submission itself (scoring that goes straight on to delivery).
    ``queue_name``, when the caller knows it, saves the log line a query.
    """
    check_edge(from_status, to_status)
    now = now or timezone.now()
    with transaction.atomic():
        changed = Submission.objects.filter(pk=submission_id, status=from_status, **(where or {})).update(
            status=to_status, updated_at=now, **updates
        )
        if changed != 1:
            return False
        _record(submission_id, from_status, to_status, reason, actor, now, details or {}, queue_name)
        if followup and from_status != to_status:
            _schedule_followup(submission_id, to_status)
    return True


# --- Follow-up work ---------------------------------------------------------------------------------


def _schedule_followup(submission_id: int, to_status: str) -> None:
    """After commit, ask for the work that continues a submission that has just entered ``to_status``: a
    returned reply asks for a scoring run, a graded or failed submission for its delivery."""
    if to_status == Status.RETURNED:
        transaction.on_commit(scoring_signal.request_scoring)
    elif to_status in (Status.GRADED, Status.FAILED):
        publish.deliver_after_commit(submission_id)


# --- Scoring runs ---------------------------------------------------------------------------------------
# Returned replies are scored and delivered in runs (grading.delivery.score_and_deliver_returned); a committed
# reply asks for one through the scoring signal (grading.scoring_signal), which keeps it to one task message
# per run.


# --- Submit -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSubmission:
    queue: Queue
    lms_header: str
    lms_callback_url: str
    lms_key: str
    body: str
    files: dict[str, str]


def submit(new: NewSubmission, user: Any) -> tuple[Submission, int]:
    """Store a submission from the LMS and supersede the student's earlier unfinished answers.

    Only answers of the same queue submitted by the same LMS account are superseded: callback URLs are
    predictable, and an account must not be able to cancel another account's work (or its own in another
    queue) by reusing one.

    Returns the submission and the queue's length after it (what the LMS is told).
    """
    now = timezone.now()
    digest = callback_digest(new.lms_callback_url)
    actor = actor_of(user)
    with transaction.atomic():
        submission = Submission.objects.create(
            queue=new.queue,
            status=Status.QUEUED,
            lms_header=new.lms_header,
            lms_callback_url=new.lms_callback_url,
            callback_hash=digest,
            lms_key=new.lms_key,
            body=new.body,
            files=new.files,
            submitted_by=user if getattr(user, "is_authenticated", False) else None,
            created_at=now,
            updated_at=now,
        )
        _record(submission.pk, "", Status.QUEUED, "submitted", actor, now, {"queue": new.queue.name})
        publish.dispatch_after_commit(new.queue.pk, new.queue.mode)
        earlier = (
            Submission.objects.filter(
                callback_hash=digest,
                queue=new.queue,
                submitted_by=submission.submitted_by_id,
                lms_callback_url=new.lms_callback_url,
                status__in=UNFINISHED,
            )
            .exclude(pk=submission.pk)
            .values_list("pk", "status")
        )
        for pk, status in earlier:
            transition(
                pk,
                status,
                Status.SUPERSEDED,
                reason="superseded",
                actor=actor,
                details={"by": submission.pk},
                now=now,
                superseded_by=submission.pk,
            )
        length = queue_length(new.queue.pk)
    return submission, length


@dataclass(frozen=True)
class ImportedSubmission:
    """An unfinished submission taken over from openedx/xqueue (``manage.py import_xqueue``)."""

    new: NewSubmission
    origin: str
    xqueue_id: int
    arrived_at: datetime
    # The grader's reply that xqueue never got the LMS to acknowledge; empty when it was never graded.
    grader_reply: str = ""
    returned_at: datetime | None = None


class ImportOutcome(enum.Enum):
    WAITING = "waiting"  # queued for a grader
    FOR_DELIVERY = "for_delivery"  # its reply is scored and delivered; no grader sees it again
    ALREADY_IMPORTED = "already_imported"
    SUPERSEDED = "superseded"  # a newer answer to the same problem is already in gradequeue: nothing stored


def unfinished_for_callback(callback_url: str) -> int | None:
    """The id of a submission for this LMS callback (student and problem) that still owes a grade, if any."""
    return (
        Submission.objects.filter(
            callback_hash=callback_digest(callback_url), lms_callback_url=callback_url, status__in=UNFINISHED
        )
        .values_list("pk", flat=True)
        .first()
    )


def import_submission(item: ImportedSubmission, *, actor: str) -> tuple[ImportOutcome, int | None]:
    """Store a submission taken over from xqueue, once per (origin, xqueue id).

    A submission without a grader reply enters ``queued``, like a fresh submit. One whose reply xqueue never
    delivered enters ``returned`` with that reply: the scoring run checks it and delivers it, as for a reply
    put by a grader here, so it is not graded again. Its event row (from nothing) records the xqueue id.
    Returns the outcome and the gradequeue submission's id (the existing one when already imported).
    """
    from django.db import IntegrityError

    from grading.models import XqueueImport

    new = item.new
    now = timezone.now()
    digest = callback_digest(new.lms_callback_url)
    status = Status.RETURNED if item.grader_reply else Status.QUEUED
    try:
        with transaction.atomic():
            existing = (
                XqueueImport.objects.filter(origin=item.origin, xqueue_id=item.xqueue_id)
                .values_list("submission_id", flat=True)
                .first()
            )
            if existing is not None:
                return ImportOutcome.ALREADY_IMPORTED, existing
            newer = unfinished_for_callback(new.lms_callback_url)
            if newer is not None:
                return ImportOutcome.SUPERSEDED, newer
            returned_at = (item.returned_at or now) if item.grader_reply else None
            submission = Submission.objects.create(
                queue=new.queue,
                status=status,
                lms_header=new.lms_header,
                lms_callback_url=new.lms_callback_url,
                callback_hash=digest,
                lms_key=new.lms_key,
                body=new.body,
                files=new.files,
                created_at=item.arrived_at,
                updated_at=now,
                grader_reply=item.grader_reply,
                returned_at=returned_at,
            )
            XqueueImport.objects.create(
                origin=item.origin, xqueue_id=item.xqueue_id, submission=submission, imported_at=now
            )
            details = {"queue": new.queue.name, "origin": item.origin, "xqueue_id": item.xqueue_id}
            _record(submission.pk, "", status, "imported", actor, now, details)
            if status == Status.QUEUED:
                publish.dispatch_after_commit(new.queue.pk, new.queue.mode)
            else:
                _schedule_followup(submission.pk, status)
    except IntegrityError:
        # A concurrent import of the same row won the unique (origin, xqueue_id).
        existing = (
            XqueueImport.objects.filter(origin=item.origin, xqueue_id=item.xqueue_id)
            .values_list("submission_id", flat=True)
            .first()
        )
        if existing is None:
            raise
        return ImportOutcome.ALREADY_IMPORTED, existing
    outcome = ImportOutcome.FOR_DELIVERY if status == Status.RETURNED else ImportOutcome.WAITING
    return outcome, submission.pk


def _pg_ids(ids: Iterable[int]) -> str:
    """A list of ids as PostgreSQL's array text ('{1,2}'), for a ``%s::bigint[]`` parameter: adapting a Python
    list costs psycopg a type look-up per statement (a sixth of a lease's client-side time)."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


@contextlib.contextmanager
def _unprepared() -> Iterator[None]:
    """Statements run meanwhile are not prepared: PostgreSQL plans each for the parameters it is given.

    Other statements are prepared after five runs on a connection (config/settings.py), and PostgreSQL then
    settles on one plan for any parameters ("generic plan"). The follow-up sweep's delivery look-up, whose
    statuses that plan does not know, scanned the whole table that way. The lease and get_queuelen's counts
    were here too, until the foreign key's own index on queue_id, through which their plans for any queue
    walked a whole long queue, was dropped (migration 0014, tests/grading/test_lease_plan.py). Planning
    costs about 0.2 ms.
    """
    raw: Any = connection.connection if connection.vendor == "postgresql" else None
    threshold = getattr(raw, "prepare_threshold", None)
    if threshold is None:
        yield
        return
    raw.prepare_threshold = None  # psycopg: nothing is prepared on this connection meanwhile
    try:
        yield
    finally:
        raw.prepare_threshold = threshold


# Waiting is "queued", and also "pulled" with a lease that has run out and attempts left (the lease takes
# it over, ``lease_next``): an expired lease counts the moment it expires, not when beat's reclaim next runs.
# One that has used its queue's max_attempts is not waiting: the reclaim fails it and the LMS is told.
# Each half of the bounded count (is there work?) reads its own partial index: sub_waiting (see
# _PG_LEASE_SQL) and sub_leased (expired leases are the few entries of that index at or before now); the
# bound on updated_at is _PG_LEASE_SQL's.
_PG_BOUNDED_LENGTH_SQL = """
SELECT (
    SELECT count(*) FROM (
        SELECT id FROM grading_submission
        WHERE queue_id = ANY(%(queue_ids)s::bigint[]) AND status = 'queued'
        ORDER BY queue_id, id
        LIMIT %(limit)s
    ) AS queued
) + (
    SELECT count(*) FROM (
        SELECT s.id FROM grading_submission AS s
        WHERE s.status = 'pulled' AND s.lease_expires_at <= %(now)s AND s.queue_id = ANY(%(queue_ids)s::bigint[])
          AND s.attempts < (
              SELECT coalesce(nullif(q.max_attempts, 0), %(max_attempts)s) FROM grading_queue AS q
              WHERE q.id = s.queue_id
          )
          AND s.updated_at <= %(now)s - make_interval(secs => (
              SELECT coalesce(nullif(q.lease_seconds, 0), %(lease_seconds)s) FROM grading_queue AS q
              WHERE q.id = %(queue_id)s
          ))
        LIMIT %(limit)s
    ) AS expired
)
"""

# The whole length (get_queuelen): the same two counts without a limit.
_PG_LENGTH_SQL = """
SELECT (
    SELECT count(*) FROM grading_submission
    WHERE queue_id = ANY(%(queue_ids)s::bigint[]) AND status = 'queued'
) + (
    SELECT count(*) FROM grading_submission AS s
    WHERE s.status = 'pulled' AND s.lease_expires_at <= %(now)s AND s.queue_id = ANY(%(queue_ids)s::bigint[])
      AND s.attempts < (
          SELECT coalesce(nullif(q.max_attempts, 0), %(max_attempts)s) FROM grading_queue AS q
          WHERE q.id = s.queue_id
      )
      AND s.updated_at <= %(now)s - make_interval(secs => (
          SELECT coalesce(nullif(q.lease_seconds, 0), %(lease_seconds)s) FROM grading_queue AS q
          WHERE q.id = %(queue_id)s
      ))
)
"""


def _pg_length_params(queue_id: int, limit: int | None, now: datetime) -> dict[str, Any]:
    """The parameters of ``_PG_BOUNDED_LENGTH_SQL`` (with a ``limit``) and ``_PG_LENGTH_SQL``."""
    return {
        "queue_ids": _pg_ids([queue_id]),
        "limit": limit,
        "now": now,
        "max_attempts": setting("MAX_ATTEMPTS"),
        "lease_seconds": setting("LEASE_SECONDS"),
        "queue_id": queue_id,
    }


def _expired_leases(now: datetime, max_attempts: Any) -> Q:
    """Leased submissions whose lease ran out at or before ``now`` with fewer than ``max_attempts`` leases."""
    return Q(status=Status.PULLED, lease_expires_at__lte=now, attempts__lt=max_attempts)


def queue_length(queue_id: int, *, limit: int | None = None) -> int:
    """Submissions of a queue waiting to be handed out, up to ``limit``: the queued ones and those whose
    lease has expired with attempts left. Leases that still run are not counted."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        sql = _PG_LENGTH_SQL if limit is None else _PG_BOUNDED_LENGTH_SQL
        with connection.cursor() as cursor:
            cursor.execute(sql, _pg_length_params(queue_id, limit, now))
            row = cursor.fetchone()
        total = int(row[0]) if row else 0
        return total if limit is None else min(total, limit)
    # Two index look-ups in one statement (sub_waiting, sub_leased): one OR of both walks every row of the queue.
    queue_max = Subquery(Queue.objects.filter(pk=queue_id).values("max_attempts"))
    max_attempts = Coalesce(NullIf(queue_max, Value(0)), Value(setting("MAX_ATTEMPTS")))
    queued = Submission.objects.filter(queue_id=queue_id, status=Status.QUEUED).values("pk")
    expired = Submission.objects.filter(_expired_leases(now, max_attempts), queue_id=queue_id).values("pk")
    waiting = queued.union(expired, all=True)
    if limit is not None:
        waiting = waiting[:limit]
    return waiting.count()


# --- Lease --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    submission_id: int
    key: str
    body: str
    files: dict[str, str]
    attempt: int
    expires_at: datetime


def new_lease_key() -> str:
    return secrets.token_urlsafe(32)


# The actor of every lease_expired event, whether beat's reclaim records it or a lease that takes the expired
# lease over: a timeline reads the same whichever came first.
RECLAIM_ACTOR = "system:reclaim"


def max_attempts_of(queue: Queue) -> int:
    """Leases a submission of ``queue`` gets before it fails: Queue.max_attempts, else MAX_ATTEMPTS."""
    return int(queue.max_attempts or setting("MAX_ATTEMPTS"))


# A lease takes, first, a submission of the queue whose lease has run out with attempts left (the one that
# expired first), and otherwise the oldest waiting one; either way SKIP LOCKED, so two pullers never take the
# same row. The expired probe reads sub_leased (lease_expires_at WHERE status = 'pulled'): the expired
# leases are that index's entries at or before now, none in the usual case, so the probe costs one index
# descent. The waiting submission comes from the partial index sub_waiting (queue_id, id WHERE status =
# 'queued') whatever PostgreSQL's statistics say. Written as "queue_id = %s ... ORDER BY id", the
# planner may walk the primary key instead, filtering out every submission already handed out: it does
# whenever the statistics say most rows are queued (a young table after an exam's burst, until the next
# auto-analyze), and each lease then reads every row handed out so far (3 ms per lease after 1 000 in a
# 2 000 drain, three quarters of PostgreSQL's time). Only sub_waiting can give "queue_id = ANY(array)"
# rows in (queue_id, id) order, so that form always takes it. (The same for queue_length's count.)
# The candidate's UNION ALL stops at its first row: when an expired lease is found, the waiting probe
# does not run. A lease sets updated_at to its start, so one that has expired was updated at least one lease
# length ago: "updated_at <= leased_before" changes no answer, and bounds the other plan PostgreSQL takes
# when its statistics have never seen a lease (sub_status_updated's "pulled" range, which the empty
# sub_leased loses to on cost) to the old leases instead of every lease in flight. (A row whose lease length
# was raised since it was leased waits for the reclaim instead.)
_PG_LEASE_SQL = """
WITH expired AS (
    SELECT id FROM grading_submission
    WHERE status = 'pulled' AND lease_expires_at <= %(now)s AND queue_id = ANY(%(queue_ids)s::bigint[])
      AND attempts < %(max_attempts)s AND updated_at <= %(leased_before)s
    ORDER BY lease_expires_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), waiting AS (
    SELECT id FROM grading_submission
    WHERE queue_id = ANY(%(queue_ids)s::bigint[]) AND status = 'queued'
    ORDER BY queue_id, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), candidate AS (
    SELECT id, 'pulled' AS was FROM expired
    UNION ALL
    SELECT id, 'queued' AS was FROM waiting
    LIMIT 1
), leased AS (
    UPDATE grading_submission AS s
    SET status = 'pulled', lease_key = %(key)s, lease_expires_at = %(expires)s,
        leased_to_id = %(user_id)s, attempts = s.attempts + 1, updated_at = %(now)s
    FROM candidate
    WHERE s.id = candidate.id
    RETURNING s.id, s.body, s.files, s.attempts, candidate.was
), event AS (
    INSERT INTO grading_submissionevent
        (submission_id, from_status, to_status, reason, actor, created_at, details)
    SELECT id, from_status, to_status, reason, actor, %(now)s, details FROM (
        SELECT id, 1 AS step, 'pulled' AS from_status, 'queued' AS to_status, 'lease_expired' AS reason,
               %(reclaim_actor)s AS actor, jsonb_build_object('attempt', attempts - 1) AS details
        FROM leased WHERE was = 'pulled'
        UNION ALL
        SELECT id, 2, 'queued', 'pulled', %(reason)s, %(actor)s,
               jsonb_build_object('attempt', attempts, 'expires_at', %(expires_iso)s::text)
        FROM leased
    ) AS steps
    ORDER BY step
)
SELECT id, body, files, attempts, was FROM leased
"""


def _pg_lease_params(
    queue_id: int,
    key: str,
    expires: datetime,
    user_id: int | None,
    now: datetime,
    reason: str,
    actor: str,
    max_attempts: int,
) -> dict[str, Any]:
    """The parameters of ``_PG_LEASE_SQL`` (tests/grading/test_lease_plan.py plans it with these)."""
    return {
        "queue_ids": _pg_ids([queue_id]),
        "key": key,
        "expires": expires,
        "expires_iso": expires.isoformat(),
        "user_id": user_id,
        "now": now,
        "reason": reason,
        "actor": actor,
        "reclaim_actor": RECLAIM_ACTOR,
        "max_attempts": max_attempts,
        "leased_before": now - (expires - now),  # leased at least one lease length ago
    }


def lease_next(queue: Queue, user: Any, *, reason: str = "lease", actor: str | None = None) -> Lease | None:
    """Lease a submission of ``queue`` to ``user``, or return None if none is waiting.

    An expired lease with attempts left is taken over first, the moment it expires: its timeline gets the
    reclaim's ``lease_expired`` event (pulled → queued), then the lease's; the attempt is counted and the
    key is new, so a late result under the old key is refused. An expired lease that has had the queue's
    max_attempts is left to ``reclaim_expired``, which fails it and tells the LMS. Otherwise the oldest
    waiting submission is leased.

    On PostgreSQL this is one statement (claim with SKIP LOCKED, update, events); elsewhere it is a claim,
    an update and the events in one transaction (``_locking_lease``). Concurrent callers never get the same row.
    """
    now = timezone.now()
    policy = policy_for(queue)
    expires = now + timedelta(seconds=policy.lease_seconds)
    key = new_lease_key()
    actor = actor or actor_of(user)
    user_id = user.pk if getattr(user, "is_authenticated", False) else None
    limit = max_attempts_of(queue)
    if connection.vendor == "postgresql":
        # One statement is one transaction in autocommit: no BEGIN/COMMIT round trips around it.
        # Prepared on the connection after five runs, as other statements (planning it each time cost PostgreSQL
        # more than running it): its plan for any queue reads the head of sub_waiting, with every index of
        # Submission in place (Submission.queue; tests/grading/test_lease_plan.py forces that plan).
        params = _pg_lease_params(queue.pk, key, expires, user_id, now, reason, actor, limit)
        with connection.cursor() as cursor:
            cursor.execute(_PG_LEASE_SQL, params)
            row = cursor.fetchone()
        if row is None:
            return None
        pk, body, files, attempts, was = row
        if isinstance(files, str):
            files = json.loads(files)
        if was == Status.PULLED:
            log_transition(pk, Status.PULLED, Status.QUEUED, "lease_expired", RECLAIM_ACTOR, queue.name)
        log_transition(pk, Status.QUEUED, Status.PULLED, reason, actor, queue.name)
        return Lease(pk, key, body, files or {}, attempts, expires)

    return _locking_lease(queue, key, expires, user_id, now, reason, actor, limit)


# MySQL's and MariaDB's claims name their index: with few rows, or statistics that say most rows wait, their
# optimizers walk the primary key (or scan and sort) instead, reading every submission already handed out
# before the first waiting one (EXPLAIN in tests/grading/test_lease_plan.py). sub_waiting is (queue_id, status,
# id) there (migration 0010): the range's entries come in id order, and the first one not locked is the claim.
# sub_leased is (status, lease_expires_at): the expired leases are the range up to now. That probe does not
# lock: a locking read of it locks the entry that ends the range too (a waiting row's, "queued" follows
# "pulled"), which the lease's UPDATE of that row then waits for, and 32 pullers deadlocked on those entries.
# The few rows it finds are then claimed by primary key, SKIP LOCKED, their conditions checked again.
_MY_EXPIRED_PROBE_SQL = """
SELECT id FROM grading_submission FORCE INDEX (sub_leased)
WHERE status = 'pulled' AND lease_expires_at <= %s AND queue_id = %s AND attempts < %s
ORDER BY lease_expires_at
LIMIT 8
"""

_MY_EXPIRED_CLAIM_SQL = """
SELECT id, attempts, body, files, lease_key FROM grading_submission FORCE INDEX (PRIMARY)
WHERE id IN ({ids}) AND status = 'pulled' AND lease_expires_at <= %s AND queue_id = %s AND attempts < %s
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

_MY_LEASE_CLAIM_SQL = """
SELECT id, attempts, body, files, lease_key FROM grading_submission FORCE INDEX (sub_waiting)
WHERE queue_id = %s AND status = 'queued'
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""


def _my_claim(queue: Queue, now: datetime, max_attempts: int) -> tuple[str, tuple[Any, ...]] | None:
    row = None
    status = Status.PULLED
    with connection.cursor() as cursor:
        cursor.execute(_MY_EXPIRED_PROBE_SQL, [now, queue.pk, max_attempts])
        ids = [int(found[0]) for found in cursor.fetchall()]
        if ids:
            sql = _MY_EXPIRED_CLAIM_SQL.format(ids=", ".join(["%s"] * len(ids)))
            cursor.execute(sql, [*ids, now, queue.pk, max_attempts])
            row = cursor.fetchone()
        if row is None:
            status = Status.QUEUED
            cursor.execute(_MY_LEASE_CLAIM_SQL, [queue.pk])
            row = cursor.fetchone()
    if row is None:
        return None
    if isinstance(row[3], str | bytes):
        row = (*row[:3], json.loads(row[3]), row[4])
    return status, row


def _claim(queue: Queue, now: datetime, max_attempts: int) -> tuple[str, tuple[Any, ...]] | None:
    """The row ``_locking_lease`` takes, locked, and the status it has now: an expired lease, else the
    oldest waiting submission."""
    if connection.vendor == "mysql":
        return _my_claim(queue, now, max_attempts)
    fields = ("pk", "attempts", "body", "files", "lease_key")
    candidates = Submission.objects.select_for_update(skip_locked=True).filter(queue_id=queue.pk)
    expired = candidates.filter(_expired_leases(now, max_attempts)).order_by("lease_expires_at")
    found = expired.values_list(*fields).first()
    if found is not None:
        return Status.PULLED, found
    found = candidates.filter(status=Status.QUEUED).order_by("pk").values_list(*fields).first()
    return (Status.QUEUED, found) if found is not None else None


def _locking_lease(
    queue: Queue,
    key: str,
    expires: datetime,
    user_id: int | None,
    now: datetime,
    reason: str,
    actor: str,
    max_attempts: int,
) -> Lease | None:
    """The lease on MySQL/MariaDB and SQLite: claim, update and events in one transaction.

    MySQL and MariaDB claim an expired lease, else the oldest waiting row, with ``SELECT ... FOR UPDATE SKIP
    LOCKED`` through the indexes migration 0010 gives them (``_my_claim``),
    so that concurrent pulls take different rows without waiting on each other. SQLite ignores the lock
    clause: its IMMEDIATE transactions take the database's write lock up front, so claims are serialised and
    the row found is this one's to take.
    """
    check_edge(Status.QUEUED, Status.PULLED)
    with transaction.atomic():
        claimed = _claim(queue, now, max_attempts)
        if claimed is None:
            return None
        was, (pk, attempts, body, files, old_key) = claimed
        # The row is locked (or the database is, on SQLite); the conditions only refuse a row that changed.
        where: dict[str, Any] = {"pk": pk, "status": was}
        if was == Status.PULLED:
            check_edge(Status.PULLED, Status.QUEUED)
            where.update(lease_key=old_key, lease_expires_at__lte=now)
        changed = Submission.objects.filter(**where).update(
            status=Status.PULLED,
            lease_key=key,
            lease_expires_at=expires,
            leased_to_id=user_id,
            attempts=attempts + 1,
            updated_at=now,
        )
        if changed != 1:  # cannot happen while the row is locked; refuse rather than hand out a guess
            return None
        if was == Status.PULLED:
            details = {"attempt": attempts}
            _record(pk, Status.PULLED, Status.QUEUED, "lease_expired", RECLAIM_ACTOR, now, details, queue.name)
        details = {"attempt": attempts + 1, "expires_at": expires.isoformat()}
        _record(pk, Status.QUEUED, Status.PULLED, reason, actor, now, details, queue.name)
    return Lease(pk, key, body, files or {}, attempts + 1, expires)


# --- Results ----------------------------------------------------------------------------------------


class ResultOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the same result for the same lease, already taken: a harmless no-op
    NO_SUCH_SUBMISSION = "no_such_submission"
    WRONG_KEY = "wrong_key"


_PG_ACCEPT_SQL = """
WITH accepted AS (
    UPDATE grading_submission
    SET status = 'returned', grader_reply = %(reply)s, returned_at = %(now)s, updated_at = %(now)s
    WHERE id = %(id)s AND status = 'pulled' AND lease_key = %(key)s AND lease_expires_at > %(now)s
      AND queue_id = ANY(%(queues)s::bigint[])
    RETURNING id, queue_id
), event AS (
    INSERT INTO grading_submissionevent
        (submission_id, from_status, to_status, reason, actor, created_at, details)
    SELECT id, 'pulled', 'returned', 'result', %(actor)s, %(now)s, '{}'::jsonb FROM accepted
)
SELECT accepted.id, q.name FROM accepted JOIN grading_queue AS q ON q.id = accepted.queue_id
"""


def accept_result(
    submission_id: int,
    key: str,
    reply: str,
    user: Any,
    allowed_queue_ids: Iterable[int],
    *,
    actor: str | None = None,
) -> ResultOutcome:
    """Take a grader's reply for the submission's current, unexpired lease.

    A result whose key is not the current lease's (expired and re-leased, superseded, guessed) is refused;
    the same result sent again for a lease already answered is accepted as a no-op.
    """
    now = timezone.now()
    queue_ids = list(allowed_queue_ids)
    actor = actor or actor_of(user)
    if connection.vendor == "postgresql":
        # One statement, its own transaction in autocommit (no BEGIN/COMMIT round trips); the follow-up is
        # then enqueued right after it commits (or after the caller's transaction, if there is one).
        with connection.cursor() as cursor:
            cursor.execute(
                _PG_ACCEPT_SQL,
                {
                    "reply": reply,
                    "now": now,
                    "id": submission_id,
                    "key": key,
                    "queues": _pg_ids(queue_ids),
                    "actor": actor,
                },
            )
            row = cursor.fetchone()
            won = row is not None
        if row is not None:
            # The queue name comes back with the row: no extra query for the log line.
            log_transition(submission_id, Status.PULLED, Status.RETURNED, "result", actor, row[1])
            _schedule_followup(submission_id, Status.RETURNED)
    else:
        won = transition(
            submission_id,
            Status.PULLED,
            Status.RETURNED,
            reason="result",
            actor=actor,
            where={"lease_key": key, "lease_expires_at__gt": now, "queue_id__in": queue_ids},
            now=now,
            grader_reply=reply,
            returned_at=now,
        )
    if won:
        return ResultOutcome.ACCEPTED

    row = (
        Submission.objects.filter(pk=submission_id, queue_id__in=queue_ids)
        .values_list("status", "lease_key", "grader_reply")
        .first()
    )
    if row is None:
        return ResultOutcome.NO_SUCH_SUBMISSION
    status, lease_key, previous_reply = row
    answered = status not in (Status.QUEUED, Status.PULLED, Status.SUPERSEDED, Status.CANCELLED)
    # Compared as bytes: compare_digest refuses non-ASCII text, and a grader's key can be any text.
    same_key = bool(lease_key) and secrets.compare_digest(lease_key.encode(), key.encode())
    if answered and same_key and previous_reply == reply:
        return ResultOutcome.DUPLICATE
    return ResultOutcome.WRONG_KEY


# --- Scoring -------------------------------------------------------------------------------------------


def score_and_claim(submission_id: int, *, actor: str = "system:scoring") -> DeliveryClaim | None:
    """Score a returned reply and, if it is a usable grade, take the first delivery attempt in the same step.

    What scoring runs do (``score_returned_batch``), for one reply: the grade is then posted by the caller,
    without a second task message or a separate claim. The claim holds ``next_delivery_at`` past the request
    timeout, so if the worker dies before posting, the sweep delivers it later. An unusable reply fails (the
    notice goes out through the delivery task); None then, and when the row is no longer ``returned``.
    """
    if connection.vendor == "postgresql":
        _taken, claims = _pg_score(_PG_SCORE_ONE_SELECT, {"id": submission_id}, actor)
    else:
        _taken, claims = _locking_score(
            Submission.objects.select_for_update().filter(pk=submission_id, status=Status.RETURNED), actor
        )
    return claims[0] if claims else None


_PG_SCORE_ONE_SELECT = """
SELECT id, grader_reply FROM grading_submission WHERE id = %(id)s AND status = 'returned' FOR UPDATE
"""

_PG_SCORE_BATCH_SELECT = """
SELECT id, grader_reply FROM grading_submission
WHERE status = 'returned'
ORDER BY updated_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

_PG_SCORE_SQL = """
WITH scored AS (
    UPDATE grading_submission AS s
    SET status = 'graded', lms_body = s.grader_reply, graded_at = %(now)s, updated_at = %(now)s,
        next_delivery_at = %(guard)s, delivery_attempts = s.delivery_attempts + 1, delivery_started_at = %(now)s
    WHERE s.id = ANY(%(ids)s) AND s.status = 'returned'
    RETURNING s.id, s.delivery_attempts, s.lms_callback_url, s.lms_header, s.lms_body, s.queue_id
), event AS (
    INSERT INTO grading_submissionevent
        (submission_id, from_status, to_status, reason, actor, created_at, details)
    SELECT id, 'returned', 'graded', 'scored', %(actor)s, %(now)s, '{}'::jsonb FROM scored
)
SELECT scored.id, scored.delivery_attempts, scored.lms_callback_url, scored.lms_header, scored.lms_body, q.name
FROM scored JOIN grading_queue AS q ON q.id = scored.queue_id
"""


def _pg_score(
    select_sql: str, params: dict[str, Any], actor: str, *, isolate: bool = True
) -> tuple[int, list[DeliveryClaim]]:
    """Lock the returned rows ``select_sql`` picks, fail the unusable replies, and score and claim the rest
    with one statement. Returns how many rows were taken, and the claims.

    Should the batch raise (one row the statement or Python cannot take), it is rolled back and, with
    ``isolate``, its rows are scored one at a time, so that the row that raises fails alone."""
    check_edge(Status.RETURNED, Status.GRADED)
    now = timezone.now()
    taken: list[tuple[Any, ...]] = []
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(select_sql, params)
            taken = cursor.fetchall()
            good = _usable_replies(taken, actor, now)
            rows: list[tuple[Any, ...]] = []
            if good:
                cursor.execute(
                    _PG_SCORE_SQL, {"ids": good, "now": now, "guard": now + delivery_guard(), "actor": actor}
                )
                rows = cursor.fetchall()
    except outage.DATABASE_CONNECTION_ERRORS:  # stops every submission alike: raised, for the retries
        raise
    except Exception:
        if not isolate or not taken:
            raise
        logger.warning("scoring a batch of %d replies raised; scoring them one at a time", len(taken), exc_info=True)
        return len(taken), _score_each([pk for pk, _reply in taken], actor)
    claims = []
    for pk, attempt, url, header, body, queue_name in rows:
        log_transition(pk, Status.RETURNED, Status.GRADED, "scored", actor, queue_name)
        claims.append(DeliveryClaim(pk, Status.GRADED, attempt, url, header, body, now, queue_name, now))
    return len(taken), claims


def _score_each(ids: list[int], actor: str) -> list[DeliveryClaim]:
    """``score_and_claim`` each reply in its own transaction; one that raises fails alone (``fail_after_error``)."""
    claims = []
    for pk in ids:
        try:
            if connection.vendor == "postgresql":
                claim = next(iter(_pg_score(_PG_SCORE_ONE_SELECT, {"id": pk}, actor, isolate=False)[1]), None)
            else:
                claim = score_and_claim(pk, actor=actor)
        except outage.DATABASE_CONNECTION_ERRORS:
            raise
        except Exception as exc:
            fail_after_error(pk, Status.RETURNED, reason="scoring_error", what="scoring", exc=exc, actor=actor)
            continue
        if claim is not None:
            claims.append(claim)
    return claims


def fail_after_error(
    submission_id: int,
    from_status: str,
    *,
    reason: str,
    what: str,
    exc: BaseException,
    actor: str,
    where: dict[str, Any] | None = None,
) -> bool:
    """``what`` raised ``exc`` for this one submission: fail it alone (the reason in its timeline, the notice
    to the LMS, an ERROR log line). Should even that raise, it is logged and left as it is for the sweep, and
    the caller still goes on with the others."""
    why = printable(f"{what} raised {type(exc).__name__}: {exc}")
    logger.error(
        "submission %s: %s; the submission fails alone",
        submission_id,
        why,
        exc_info=exc,
        extra={"submission_id": submission_id},
    )
    try:
        return fail(submission_id, from_status, reason=reason, why=why, actor=actor, where=where, clear_lease=False)
    except outage.DATABASE_CONNECTION_ERRORS:
        raise
    except Exception:
        logger.error(
            "submission %s: could not record its failure either; left for the sweep", submission_id, exc_info=True
        )
        return False


def score_returned_batch(limit: int, *, actor: str = "system:scoring") -> tuple[int, list[DeliveryClaim]]:
    """Score up to ``limit`` returned replies, oldest first; return how many were taken, and the claims.

    Each usable grade comes back claimed for its first delivery attempt (as ``score_and_claim``); an
    unusable reply fails, its notice going out through the delivery task. On PostgreSQL the replies are
    locked with SKIP LOCKED, so runs side by side take different replies, and the whole batch is scored
    with one statement. Fewer than ``limit`` taken means none was left waiting unlocked.
    """
    if connection.vendor == "postgresql":
        return _pg_score(_PG_SCORE_BATCH_SELECT, {"limit": limit}, actor)
    waiting = Submission.objects.filter(status=Status.RETURNED).order_by("updated_at")
    try:
        # MySQL/MariaDB and SQLite: the batch in one locking transaction (SKIP LOCKED where there are row locks).
        return _locking_score(waiting.select_for_update(skip_locked=True)[:limit], actor)
    except outage.DATABASE_CONNECTION_ERRORS:
        raise
    except Exception:
        # As on PostgreSQL: the batch rolled back, its rows are scored one at a time, the one that raises alone.
        ids = list(waiting.values_list("pk", flat=True)[:limit])
        logger.warning("scoring a batch of %d replies raised; scoring them one at a time", len(ids), exc_info=True)
        return len(ids), _score_each(ids, actor)


def _locking_score(returned: Any, actor: str) -> tuple[int, list[DeliveryClaim]]:
    """``_pg_score`` on MySQL/MariaDB and SQLite: lock the returned rows of the ``returned`` queryset (a
    ``select_for_update``; SQLite's IMMEDIATE transaction holds the write lock instead), fail the unusable
    replies, and score and claim the rest with one UPDATE and one INSERT of their events."""
    check_edge(Status.RETURNED, Status.GRADED)
    now = timezone.now()
    with transaction.atomic():
        taken = list(returned.values_list("pk", "grader_reply"))
        good = _usable_replies(taken, actor, now)
        rows: list[tuple[Any, ...]] = []
        if good:
            Submission.objects.filter(pk__in=good, status=Status.RETURNED).update(
                status=Status.GRADED,
                lms_body=F("grader_reply"),
                graded_at=now,
                updated_at=now,
                next_delivery_at=now + delivery_guard(),
                delivery_attempts=F("delivery_attempts") + 1,
                delivery_started_at=now,
            )
            rows = list(
                Submission.objects.filter(pk__in=good)
                .order_by("pk")
                .values_list("pk", "delivery_attempts", "lms_callback_url", "lms_header", "lms_body", "queue__name")
            )
            SubmissionEvent.objects.bulk_create(
                SubmissionEvent(
                    submission_id=row[0],
                    from_status=Status.RETURNED,
                    to_status=Status.GRADED,
                    reason="scored",
                    actor=actor,
                    created_at=now,
                    details={},
                )
                for row in rows
            )
    claims = []
    for pk, attempt, url, header, body, queue_name in rows:
        log_transition(pk, Status.RETURNED, Status.GRADED, "scored", actor, queue_name)
        claims.append(DeliveryClaim(pk, Status.GRADED, attempt, url, header, body, now, queue_name, now))
    return len(taken), claims


def _usable_replies(taken: Iterable[tuple[Any, ...]], actor: str, now: datetime) -> list[int]:
    """The ids of the claimed (id, reply) rows whose reply is a usable grade; the others are failed here."""
    good: list[int] = []
    for pk, reply in taken:
        problem = grades.validate_grade(reply)
        if problem is None:
            good.append(pk)
        else:
            _fail_reply(pk, problem, actor, now)
    return good


def _fail_reply(submission_id: int, problem: str, actor: str, now: datetime) -> bool:
    if problem == grades.NESTED_TOO_DEEPLY or problem.startswith(grades.NOT_CHECKED):
        # Not a grader's ordinary mistake: a reply built to break parsers, or a defect of ours.
        logger.error(
            "submission %s: grader reply: %s; the submission fails alone",
            submission_id,
            problem,
            extra={"submission_id": submission_id},
        )
    # The lease key stays: a grader re-sending the same reply is then recognised as a duplicate.
    return fail(
        submission_id,
        Status.RETURNED,
        reason="invalid_reply",
        why=f"grader reply: {problem}",
        actor=actor,
        details={"problem": problem},
        now=now,
        clear_lease=False,
    )


def fail(
    submission_id: int,
    from_status: str,
    *,
    reason: str,
    why: str,
    actor: str,
    details: dict[str, Any] | None = None,
    where: dict[str, Any] | None = None,
    now: datetime | None = None,
    clear_lease: bool = True,
) -> bool:
    """Give up grading: the LMS will be sent the "could not be graded" notice."""
    now = now or timezone.now()
    updates: dict[str, Any] = {
        "lms_body": grades.not_graded_notice(),
        "failure_reason": why,
        "graded_at": now,
        "next_delivery_at": now,
        "delivery_started_at": None,
    }
    if clear_lease:
        updates["lease_key"] = ""
    return transition(
        submission_id,
        from_status,
        Status.FAILED,
        reason=reason,
        actor=actor,
        now=now,
        details={"why": why, **(details or {})},
        where=where,
        **updates,
    )


# --- Reclaiming expired leases -----------------------------------------------------------------------


def reclaim_expired(*, batch: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Hand expired leases back to their queue, or fail them once they have had max_attempts leases."""
    now = now or timezone.now()
    batch = batch or setting("SWEEP_BATCH")
    expired = list(
        Submission.objects.filter(status=Status.PULLED, lease_expires_at__lte=now)
        .order_by("lease_expires_at")
        .values_list(
            "pk", "attempts", "lease_key", "queue__lease_seconds", "queue__max_attempts", "queue_id", "queue__mode"
        )[:batch]
    )
    counts = {"requeued": 0, "failed": 0}
    default_max = setting("MAX_ATTEMPTS")
    woken: dict[int, str] = {}
    for pk, attempts, key, _lease, max_attempts, queue_id, mode in expired:
        # A push-mode queue has a free slot (and, if requeued, work) again: its dispatcher is woken once,
        # after the loop, so that it finds the submissions already back in the queue.
        woken[queue_id] = mode
        limit = max_attempts or default_max
        # Matching the lease key makes this a no-op if the row was re-leased since we read it.
        where = {"lease_key": key, "lease_expires_at__lte": now}
        if attempts >= limit:
            why = f"no result after {attempts} lease(s)"
            if fail(
                pk,
                Status.PULLED,
                reason="lease_expired",
                why=why,
                actor=RECLAIM_ACTOR,
                details={"attempt": attempts},
                where=where,
                now=now,
            ):
                counts["failed"] += 1
        elif transition(
            pk,
            Status.PULLED,
            Status.QUEUED,
            reason="lease_expired",
            actor=RECLAIM_ACTOR,
            now=now,
            where=where,
            details={"attempt": attempts},
            lease_key="",
            lease_expires_at=None,
        ):
            counts["requeued"] += 1
    for queue_id, mode in woken.items():
        publish.dispatch_after_commit(queue_id, mode)
    return counts


# --- LMS delivery ------------------------------------------------------------------------------------


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Wait before retry number ``attempt`` (1-based): exponential, capped, with "equal jitter"."""
    base = float(setting("DELIVERY_BACKOFF_BASE"))
    cap = float(setting("DELIVERY_BACKOFF_CAP"))
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DeliveryClaim:
    submission_id: int
    status: str
    attempt: int
    callback_url: str
    lms_header: str
    lms_body: str
    started_at: datetime
    queue: str = ""
    # When this grade (or notice) was decided: with the submission, what the Idempotency-Key is made of.
    graded_at: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        """The ``Idempotency-Key`` of every POST of this grade: the same on each retry and redelivery of it,
        different for another submission, and for a new grade of the same one (after a requeue, or the notice
        that replaces a grade that could not be posted). Opaque: an HMAC of the submission and the moment its
        grade was decided, under the secret key, so two installations never share one."""
        from django.utils.crypto import salted_hmac

        moment = (self.graded_at - _EPOCH) // timedelta(microseconds=1) if self.graded_at else "-"
        digest = salted_hmac("gradequeue.delivery.idempotency-key", f"{self.submission_id}:{moment}").hexdigest()
        return f"gradequeue-{self.submission_id}-{digest[:32]}"


def delivery_guard() -> timedelta:
    """How long a delivery claim holds a grade: past the request timeout, so no one else posts it meanwhile.

    A claim taken for a batch of POSTs (a scoring run's) could outlast this while its POSTs wait their turn
    or a slow LMS answers: its holder renews it for the POSTs still outstanding (``extend_claims``, the
    heartbeat of ``grading.delivery.send_many``) at least every half timeout, so it lapses only when its
    holder has stopped (a worker killed), a guard's length after the last renewal.
    """
    return timedelta(seconds=float(setting("DELIVERY_TIMEOUT")) * 2 + 1)


def extend_claims(claims: Iterable[DeliveryClaim], *, now: datetime | None = None) -> int:
    """The heartbeat: push the guard of claims whose POSTs are still outstanding a full guard past now.

    Only the claims themselves are touched (the same submission and attempt, still graded or failed), so a
    claim that was already recorded, or taken over, stays as it is. Returns how many were renewed. Not a
    status change: no event row.
    """
    by_attempt: dict[int, list[int]] = {}
    for claim in claims:
        by_attempt.setdefault(claim.attempt, []).append(claim.submission_id)
    if not by_attempt:
        return 0
    now = now or timezone.now()
    match = Q()
    for attempt, ids in by_attempt.items():
        match |= Q(pk__in=ids, delivery_attempts=attempt)
    return Submission.objects.filter(match, status__in=(Status.GRADED, Status.FAILED)).update(
        next_delivery_at=now + delivery_guard()
    )


def claim_delivery(submission_id: int, *, now: datetime | None = None) -> DeliveryClaim | None:
    """Take the right to make the next delivery attempt, so that two tasks never POST the same grade.

    The claim pushes ``next_delivery_at`` past the request timeout: the sweep leaves it alone meanwhile,
    and picks it up again if the worker dies holding it.
    """
    now = now or timezone.now()
    row = (
        Submission.objects.filter(
            pk=submission_id, status__in=(Status.GRADED, Status.FAILED), next_delivery_at__lte=now
        )
        .values_list(
            "status",
            "delivery_attempts",
            "lms_callback_url",
            "lms_header",
            "lms_body",
            "delivery_started_at",
            "queue__name",
            "graded_at",
        )
        .first()
    )
    if row is None:
        return None
    status, attempts, url, header, body, started, queue_name, graded_at = row
    guard = now + delivery_guard()
    won = Submission.objects.filter(
        pk=submission_id, status=status, delivery_attempts=attempts, next_delivery_at__lte=now
    ).update(delivery_attempts=attempts + 1, next_delivery_at=guard, delivery_started_at=started or now)
    if won != 1:
        return None
    return DeliveryClaim(submission_id, status, attempts + 1, url, header, body, started or now, queue_name, graded_at)


class DeliveryOutcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


def is_transient(http_status: int | None) -> bool:
    """Connection errors and timeouts (no status), 5xx, 408 and 429 are worth retrying."""
    return http_status is None or http_status >= 500 or http_status in (408, 429)


def printable(text: str, limit: int = 500) -> str:
    """``text`` as every database stores it, for a reason or an event: NUL and lone surrogates (which an
    exception's message may carry from hostile input) escaped, at most ``limit`` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:limit]


def _attempt_details(claim: DeliveryClaim, http_status: int | None, error: str, duration_ms: int) -> dict[str, Any]:
    details: dict[str, Any] = {"attempt": claim.attempt, "http_status": http_status, "duration_ms": duration_ms}
    if error:
        details["error"] = printable(error)
    return details


def _record_late_answer(claim: DeliveryClaim, details: dict[str, Any], now: datetime) -> None:
    """The LMS answered a POST whose claim had already moved on (taken over after it lapsed, or the
    submission superseded or cancelled meanwhile): nothing changes, but the timeline keeps the answer, so
    that it shows every POST the LMS answered."""
    if details.get("http_status") is None:
        return
    row = Submission.objects.filter(pk=claim.submission_id).values_list("status", "delivery_attempts").first()
    if row is None:
        return
    status, attempts = row
    why = f"the submission was {status}, at delivery attempt {attempts}, when the LMS answered"
    SubmissionEvent.objects.create(
        submission_id=claim.submission_id,
        from_status=status,
        to_status=status,
        reason="late_answer",
        actor="system:delivery",
        created_at=now,
        details={**details, "why": why},
    )
    logger.warning(
        "submission %s: the LMS answered HTTP %s to delivery attempt %s after %s",
        claim.submission_id,
        details["http_status"],
        claim.attempt,
        why.removeprefix("the submission was "),
        extra={"submission_id": claim.submission_id, "queue": claim.queue, "attempt": claim.attempt},
    )


def record_delivery(
    claim: DeliveryClaim,
    *,
    http_status: int | None,
    error: str,
    duration_ms: int,
    now: datetime | None = None,
) -> tuple[DeliveryOutcome, float | None]:
    """Record one delivery attempt's outcome and decide what comes next."""
    now = now or timezone.now()
    details = _attempt_details(claim, http_status, error, duration_ms)
    if http_status == 200:
        _mark_delivered([(claim, details)], now)
        return DeliveryOutcome.DELIVERED, None
    where = {"delivery_attempts": claim.attempt}
    queue_name = claim.queue or None
    if is_transient(http_status):
        delay = backoff_delay(claim.attempt)
        horizon = float(setting("DELIVERY_HORIZON"))
        if (now - claim.started_at).total_seconds() + delay <= horizon:
            details["retry_in"] = round(delay, 3)
            if transition(
                claim.submission_id,
                claim.status,
                claim.status,
                reason="delivery_retry",
                actor="system:delivery",
                now=now,
                details=details,
                where=where,
                queue_name=queue_name,
                next_delivery_at=now + timedelta(seconds=delay),
            ):
                publish.deliver_after_commit(claim.submission_id, countdown=delay)
            else:
                _record_late_answer(claim, details, now)
            return DeliveryOutcome.RETRY, delay
        details["why"] = "delivery horizon exhausted"
    else:
        details["why"] = f"the LMS answered HTTP {http_status}"
    if not transition(
        claim.submission_id,
        claim.status,
        Status.DEAD_LETTER,
        reason="delivery_failed",
        actor="system:delivery",
        now=now,
        details=details,
        where=where,
        queue_name=queue_name,
        next_delivery_at=None,
    ):
        _record_late_answer(claim, details, now)
    return DeliveryOutcome.DEAD, None


def fail_delivery(claim: DeliveryClaim, exc: BaseException, *, now: datetime | None = None) -> DeliveryOutcome:
    """Posting ``claim``'s grade raised something that is no HTTP answer and no network error (the POST could
    not even be made of it): that submission fails alone and the run goes on.

    A grade becomes ``failed`` and the LMS is sent the "could not be graded" notice instead (its own delivery
    attempts follow); a notice that cannot be posted either goes to ``dead_letter`` for an operator. The
    reason is in the timeline and in an ERROR log line. (Should the grade have reached the LMS after all, the
    Open edX LMS ignores the notice: its ``lms_key`` is no longer pending.)
    """
    now = now or timezone.now()
    why = printable(f"posting it raised {type(exc).__name__}: {exc}")
    logger.error(
        "submission %s: delivery attempt %s %s; the submission fails alone",
        claim.submission_id,
        claim.attempt,
        why,
        exc_info=exc,
        extra={"submission_id": claim.submission_id, "queue": claim.queue, "attempt": claim.attempt},
    )
    where = {"delivery_attempts": claim.attempt}
    details = {"attempt": claim.attempt, "error": why}
    if claim.status == Status.GRADED and fail(
        claim.submission_id,
        Status.GRADED,
        reason="delivery_error",
        why=f"delivery: {why}",
        actor="system:delivery",
        details=details,
        where=where,
        now=now,
        clear_lease=False,
    ):
        return DeliveryOutcome.RETRY
    transition(
        claim.submission_id,
        claim.status,
        Status.DEAD_LETTER,
        reason="delivery_error",
        actor="system:delivery",
        now=now,
        details={**details, "why": "the notice could not be posted"},
        where=where,
        queue_name=claim.queue or None,
        next_delivery_at=None,
    )
    return DeliveryOutcome.DEAD


def record_deliveries(
    attempts: list[tuple[DeliveryClaim, int | None, str, int]], *, now: datetime | None = None
) -> list[tuple[DeliveryOutcome, float | None]]:
    """``record_delivery`` for many attempts (claim, http_status, error, duration_ms) at once, all or none.

    The common case, delivered, is one statement for all of them on PostgreSQL; the rest go one by one.
    """
    now = now or timezone.now()
    outcomes: list[tuple[DeliveryOutcome, float | None]] = []
    delivered: list[tuple[DeliveryClaim, dict[str, Any]]] = []
    # All delivered is one statement (or, elsewhere, one transaction per row, as in record_delivery); with a
    # retry or a dead letter among them, one transaction, so that a caller may record them again one by one.
    together = transaction.atomic() if any(a[1] != 200 for a in attempts) else contextlib.nullcontext()
    with together:
        for claim, http_status, error, duration_ms in attempts:
            if http_status == 200:
                delivered.append((claim, _attempt_details(claim, http_status, error, duration_ms)))
                outcomes.append((DeliveryOutcome.DELIVERED, None))
            else:
                outcomes.append(
                    record_delivery(claim, http_status=http_status, error=error, duration_ms=duration_ms, now=now)
                )
        if delivered:
            _mark_delivered(delivered, now)
    return outcomes


_PG_DELIVERED_SQL = """
WITH attempt AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(attempts)s::int[], %(details)s::text[])
        AS t(id, status, attempt, details)
), done AS (
    UPDATE grading_submission AS s
    SET status = 'delivered', delivered_at = %(now)s, next_delivery_at = NULL, updated_at = %(now)s
    FROM attempt
    WHERE s.id = attempt.id AND s.status = attempt.status AND s.delivery_attempts = attempt.attempt
    RETURNING s.id, attempt.status, attempt.details
), event AS (
    INSERT INTO grading_submissionevent
        (submission_id, from_status, to_status, reason, actor, created_at, details)
    SELECT id, status, 'delivered', 'delivered', 'system:delivery', %(now)s, details::jsonb FROM done
)
SELECT id FROM done
"""


def _mark_delivered(delivered: list[tuple[DeliveryClaim, dict[str, Any]]], now: datetime) -> None:
    """graded/failed -> delivered for the attempts the claims made (one statement on PostgreSQL)."""
    for claim, _details in delivered:
        check_edge(claim.status, Status.DELIVERED)
    if connection.vendor != "postgresql":
        _locking_mark_delivered(delivered, now)
        return
    params: dict[str, Any] = {
        "ids": [c.submission_id for c, _ in delivered],
        "statuses": [str(c.status) for c, _ in delivered],
        "attempts": [c.attempt for c, _ in delivered],
        "details": [json.dumps(d) for _, d in delivered],
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_PG_DELIVERED_SQL, params)
        done = {row[0] for row in cursor.fetchall()}
    for claim, details in delivered:
        if claim.submission_id in done:
            log_transition(
                claim.submission_id, claim.status, Status.DELIVERED, "delivered", "system:delivery", claim.queue or None
            )
        else:
            _record_late_answer(claim, details, now)


def _locking_mark_delivered(delivered: list[tuple[DeliveryClaim, dict[str, Any]]], now: datetime) -> None:
    """``_mark_delivered`` on MySQL/MariaDB and SQLite: lock the rows, keep those still in the state and
    attempt their claim made, move them with one UPDATE and write their events with one INSERT."""
    claims = {claim.submission_id: (claim, details) for claim, details in delivered}
    with transaction.atomic():
        current = (
            Submission.objects.select_for_update()
            .filter(pk__in=list(claims))
            .order_by("pk")
            .values_list("pk", "status", "delivery_attempts")
        )
        done = [
            pk
            for pk, status, attempts in current
            if (claims[pk][0].status, claims[pk][0].attempt) == (status, attempts)
        ]
        if done:
            Submission.objects.filter(pk__in=done).update(
                status=Status.DELIVERED, delivered_at=now, next_delivery_at=None, updated_at=now
            )
            SubmissionEvent.objects.bulk_create(
                SubmissionEvent(
                    submission_id=pk,
                    from_status=claims[pk][0].status,
                    to_status=Status.DELIVERED,
                    reason="delivered",
                    actor="system:delivery",
                    created_at=now,
                    details=claims[pk][1],
                )
                for pk in done
            )
    for pk, (claim, details) in claims.items():
        if pk in done:
            log_transition(pk, claim.status, Status.DELIVERED, "delivered", "system:delivery", claim.queue or None)
        else:
            _record_late_answer(claim, details, now)


def redeliver(submission_id: int, *, actor: str) -> bool:
    """Send a dead-lettered grade again, with a fresh delivery horizon."""
    row = Submission.objects.filter(pk=submission_id, status=Status.DEAD_LETTER).values_list("failure_reason").first()
    if row is None:
        return False
    target = Status.FAILED if row[0] else Status.GRADED
    now = timezone.now()
    return transition(
        submission_id,
        Status.DEAD_LETTER,
        target,
        reason="redeliver",
        actor=actor,
        now=now,
        next_delivery_at=now,
        delivery_started_at=None,
    )


# --- Operator actions --------------------------------------------------------------------------------


def requeue(submission_id: int, *, actor: str) -> bool:
    """Put a submission back in its queue for a fresh round of grading (attempts start again)."""
    row = Submission.objects.filter(pk=submission_id).values_list("status", "queue_id", "queue__mode").first()
    if row is None or Status.QUEUED not in TRANSITIONS[Status(row[0])]:
        return False
    with transaction.atomic():
        done = transition(
            submission_id,
            row[0],
            Status.QUEUED,
            reason="requeue",
            actor=actor,
            attempts=0,
            lease_key="",
            lease_expires_at=None,
            failure_reason="",
            next_delivery_at=None,
        )
        if done:
            publish.dispatch_after_commit(row[1], row[2])
    return done


def cancel(submission_id: int, *, actor: str) -> bool:
    row = Submission.objects.filter(pk=submission_id).values_list("status").first()
    if row is None or Status.CANCELLED not in TRANSITIONS[Status(row[0])]:
        return False
    return transition(
        submission_id,
        row[0],
        Status.CANCELLED,
        reason="cancel",
        actor=actor,
        lease_key="",
        next_delivery_at=None,
    )


def fail_with_notice(submission_id: int, *, actor: str) -> bool:
    row = Submission.objects.filter(pk=submission_id).values_list("status").first()
    if row is None or Status.FAILED not in TRANSITIONS[Status(row[0])] or row[0] == Status.FAILED:
        return False
    return fail(submission_id, row[0], reason="operator_fail", why="failed by an operator", actor=actor)


# --- The sweep -----------------------------------------------------------------------------------------


def sweep_followups(*, now: datetime | None = None, batch: int | None = None) -> dict[str, int]:
    """Re-enqueue follow-up work whose task message never ran (lost at commit, or with a dead worker)."""
    # Planned at each run: prepared, the delivery look-up's generic plan (its statuses unknown) was a scan of
    # the whole table, 1-2 s a sweep from the 11th on a connection with 1 M submissions kept (bench/scale.py).
    with _unprepared():
        return _sweep(now or timezone.now(), batch or setting("SWEEP_BATCH"))


def _sweep(now: datetime, batch: int) -> dict[str, int]:
    stale = now - timedelta(seconds=float(setting("SWEEP_GRACE_SECONDS")))
    counts = {"score": 0, "deliver": 0, "dispatch": 0}
    counts["score"] = Submission.objects.filter(status=Status.RETURNED, updated_at__lte=stale)[:batch].count()
    if counts["score"]:
        # One scoring run takes every reply waiting.
        scoring_signal.request_scoring(force=True)
    for pk in Submission.objects.filter(
        status__in=(Status.GRADED, Status.FAILED), next_delivery_at__lte=stale
    ).values_list("pk", flat=True)[:batch]:
        publish.deliver(pk)
        counts["deliver"] += 1
    # Push-mode queues with work that has waited too long: the dispatch message was lost, or the queue was
    # at its in-flight cap when a slot freed up without a dispatch (a lease superseded or cancelled).
    for queue_id in (
        Submission.objects.filter(status=Status.QUEUED, queue__mode__in=PUSH_MODES, updated_at__lte=stale)
        .values_list("queue_id", flat=True)
        .distinct()[:batch]
    ):
        publish.dispatch(queue_id)
        counts["dispatch"] += 1
    return counts


# --- Push modes ----------------------------------------------------------------------------------------
# grading.push leases submissions of celery- and http-mode queues to their graders. These are the
# lifecycle's side of it: the two ways a push lease ends early. (The transitions that may give a push queue
# work or a free slot wake its dispatcher through grading.publish.)


def release_lease(submission_id: int, key: str, *, reason: str, actor: str, why: str, refund: bool) -> bool:
    """Put a leased submission back in its queue before its lease expires (the lease ``key`` must match).

    ``refund`` gives the attempt back, for a lease whose submission never reached a grader (the publish
    failed), so that a broker outage does not use up a submission's attempts.
    """
    updates: dict[str, Any] = {"lease_key": "", "lease_expires_at": None}
    if refund:
        updates["attempts"] = F("attempts") - 1
    return transition(
        submission_id,
        Status.PULLED,
        Status.QUEUED,
        reason=reason,
        actor=actor,
        details={"why": why},
        where={"lease_key": key},
        **updates,
    )


def fail_lease(submission_id: int, key: str, *, reason: str, why: str, actor: str) -> bool:
    """Like ``fail``, for a leased submission, and only while ``key`` is still its lease."""
    return fail(submission_id, Status.PULLED, reason=reason, why=why, actor=actor, where={"lease_key": key})
