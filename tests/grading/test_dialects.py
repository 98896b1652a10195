"""Each database's copy of the hot statements does what the others do.

The lease, the bounded queue length, the result, scoring and delivery are raw SQL on PostgreSQL and ORM
statements in a locking transaction on MySQL/MariaDB and SQLite. These tests run on whatever database the
suite is on (CI runs the suite on all three), and every expected value is written down here, the same for
every database, except where a database's locking differs by design, and then that is written down too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from grading import grades, lifecycle
from grading.lifecycle import DeliveryClaim, DeliveryOutcome, ResultOutcome
from grading.models import Queue, Status, Submission, SubmissionEvent
from tests.conftest import submit
from tests.xqclient import grade

# Databases whose claims skip a row another transaction has locked. SQLite has no row locks: its IMMEDIATE
# transactions take the database's write lock, so a claim waits for the other writer and then goes on.
ROW_LOCKING = {"postgresql": True, "mysql": True, "sqlite": False}


def statuses(*pks: int) -> list[str]:
    by_pk = dict(Submission.objects.filter(pk__in=pks).values_list("pk", "status"))
    return [by_pk[pk] for pk in pks]


def returned(queue: Queue, lms_user: Any, grader_user: Any, reply: str, n: int) -> int:
    pk = submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/returned/{n}").pk
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and lease.submission_id == pk
    assert lifecycle.accept_result(pk, lease.key, reply, grader_user, [queue.pk]) is ResultOutcome.ACCEPTED
    return pk


@pytest.mark.django_db
def test_leases_come_oldest_first_within_their_queue_and_the_length_counts_waiting_ones_only(
    queue: Queue, other_queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    a = submit(queue, lms_user, callback_url="http://127.0.0.1:9/a", body="A").pk
    b = submit(other_queue, lms_user, callback_url="http://127.0.0.1:9/b", body="B").pk
    c = submit(queue, lms_user, callback_url="http://127.0.0.1:9/c", body="C").pk
    d = submit(other_queue, lms_user, callback_url="http://127.0.0.1:9/d", body="D").pk
    e = submit(queue, lms_user, callback_url="http://127.0.0.1:9/e", body="E").pk
    assert [lifecycle.queue_length(queue.pk, limit=n) for n in (None, 1, 2, 3, 10)] == [3, 1, 2, 3, 3]
    assert lifecycle.queue_length(other_queue.pk) == 2

    leases = [lifecycle.lease_next(queue, grader_user) for _ in range(4)]
    assert [(x.submission_id, x.body, x.attempt) for x in leases if x is not None] == [
        (a, "A", 1),
        (c, "C", 1),
        (e, "E", 1),
    ]
    assert leases[3] is None
    assert [lifecycle.queue_length(queue.pk, limit=n) for n in (None, 1)] == [0, 0]
    assert statuses(a, b, c, d, e) == ["pulled", "queued", "pulled", "queued", "pulled"]

    first = leases[0]
    assert first is not None
    event = SubmissionEvent.objects.filter(submission_id=a).last()
    assert event is not None
    assert (event.from_status, event.to_status, event.reason, event.actor) == (
        "queued",
        "pulled",
        "lease",
        "user:grader",
    )
    assert event.details == {"attempt": 1, "expires_at": first.expires_at.isoformat()}
    row = Submission.objects.get(pk=a)
    assert (row.lease_key, row.lease_expires_at, row.leased_to_id, row.attempts) == (
        first.key,
        first.expires_at,
        grader_user.pk,
        1,
    )
    # The other queue's submissions are still there, oldest first.
    other = lifecycle.lease_next(other_queue, grader_user)
    assert other is not None and other.submission_id == b


def timeline(pk: int) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    return [
        (e.from_status, e.to_status, e.reason, e.actor, e.details)
        for e in SubmissionEvent.objects.filter(submission_id=pk).order_by("id")
    ]


@pytest.mark.django_db
def test_an_expired_lease_is_waiting_the_moment_it_expires_and_is_leased_again_at_once(
    queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    a = submit(queue, lms_user, callback_url="http://127.0.0.1:9/a", body="A").pk
    b = submit(queue, lms_user, callback_url="http://127.0.0.1:9/b", body="B").pk
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = lifecycle.lease_next(queue, grader_user)
        assert first is not None and (first.submission_id, first.attempt) == (a, 1)
        clock.shift(timedelta(seconds=299.999))
        assert [lifecycle.queue_length(queue.pk, limit=n) for n in (None, 1, 5)] == [1, 1, 1]
        clock.shift(timedelta(seconds=0.001))  # the lease's last instant: it has expired
        assert [lifecycle.queue_length(queue.pk, limit=n) for n in (None, 1, 2, 5)] == [2, 1, 2, 2]
        # No reclaim has run: the next lease takes the expired one over, before the waiting one.
        second = lifecycle.lease_next(queue, grader_user)
        assert second is not None
        assert (second.submission_id, second.body, second.attempt) == (a, "A", 2)
        assert second.key != first.key
        assert second.expires_at == timezone.now() + timedelta(seconds=300)
        assert [lifecycle.queue_length(queue.pk, limit=n) for n in (None, 1)] == [1, 1]
        row = Submission.objects.get(pk=a)
        assert (row.status, row.lease_key, row.lease_expires_at, row.attempts) == (
            "pulled",
            second.key,
            second.expires_at,
            2,
        )
        assert timeline(a) == [
            ("", "queued", "submitted", "user:lms", {"queue": "test-123"}),
            ("queued", "pulled", "lease", "user:grader", {"attempt": 1, "expires_at": first.expires_at.isoformat()}),
            ("pulled", "queued", "lease_expired", "system:reclaim", {"attempt": 1}),
            ("queued", "pulled", "lease", "user:grader", {"attempt": 2, "expires_at": second.expires_at.isoformat()}),
        ]
        # The reclaim finds nothing left to do, and the waiting one is next.
        assert lifecycle.reclaim_expired() == {"requeued": 0, "failed": 0}
        third = lifecycle.lease_next(queue, grader_user)
        assert third is not None and (third.submission_id, third.attempt) == (b, 1)
        assert lifecycle.lease_next(queue, grader_user) is None
        ids = [queue.pk]
        assert lifecycle.accept_result(a, first.key, grade(), grader_user, ids) is ResultOutcome.WRONG_KEY
        assert lifecycle.accept_result(a, second.key, grade(), grader_user, ids) is ResultOutcome.ACCEPTED
    assert statuses(a, b) == ["returned", "pulled"]


@pytest.mark.parametrize(("queue_max", "setting_max"), [(2, 3), (None, 2)], ids=["queue's", "setting's"])
@pytest.mark.django_db
def test_an_expired_lease_that_had_max_attempts_is_not_waiting_nor_handed_out_and_the_reclaim_fails_it(
    queue: Queue, lms_user: Any, grader_user: Any, settings: Any, queue_max: int | None, setting_max: int
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_ATTEMPTS": setting_max}
    queue.max_attempts = queue_max
    queue.save()
    a = submit(queue, lms_user, callback_url="http://127.0.0.1:9/a").pk
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = lifecycle.lease_next(queue, grader_user)
        clock.shift(timedelta(seconds=300))
        second = lifecycle.lease_next(queue, grader_user)  # the second and last attempt
        assert first is not None and second is not None
        assert (second.submission_id, second.attempt) == (a, 2)
        clock.shift(timedelta(seconds=300))
        assert [lifecycle.queue_length(queue.pk, limit=n) for n in (None, 1)] == [0, 0]
        assert lifecycle.lease_next(queue, grader_user) is None
        assert statuses(a) == ["pulled"]
        assert lifecycle.reclaim_expired() == {"requeued": 0, "failed": 1}
        assert lifecycle.lease_next(queue, grader_user) is None
    row = Submission.objects.get(pk=a)
    assert (row.status, row.attempts, row.lease_key, row.lms_body, row.failure_reason) == (
        "failed",
        2,
        "",
        grades.not_graded_notice(),
        "no result after 2 lease(s)",
    )
    assert [event[:3] for event in timeline(a)] == [
        ("", "queued", "submitted"),
        ("queued", "pulled", "lease"),
        ("pulled", "queued", "lease_expired"),
        ("queued", "pulled", "lease"),
        ("pulled", "failed", "lease_expired"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_lease_skips_an_expired_lease_another_transaction_holds(
    queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    expired = submit(queue, lms_user, callback_url="http://127.0.0.1:9/1").pk
    waiting = submit(queue, lms_user, callback_url="http://127.0.0.1:9/2").pk
    first = lifecycle.lease_next(queue, grader_user)
    assert first is not None and first.submission_id == expired
    # As if leased 301 s ago: its lease ran out a second ago.
    now = timezone.now()
    Submission.objects.filter(pk=expired).update(
        updated_at=now - timedelta(seconds=301), lease_expires_at=now - timedelta(seconds=1)
    )
    lease, answered_while_held = _hold_lock_then_run(expired, lambda: lifecycle.lease_next(queue, grader_user))
    assert lease is not None
    if ROW_LOCKING[connection.vendor]:
        assert (lease.submission_id, lease.attempt, answered_while_held) == (waiting, 1, True)
        assert statuses(expired, waiting) == ["pulled", "pulled"]
        assert Submission.objects.get(pk=expired).lease_key == first.key
    else:
        assert (lease.submission_id, lease.attempt, answered_while_held) == (expired, 2, False)
        assert statuses(expired, waiting) == ["pulled", "queued"]


def _hold_lock_then_run(pk: int, run: Any) -> tuple[Any, bool]:
    """Lock submission ``pk`` in another connection's transaction, call ``run()`` here meanwhile, and return
    its result and whether it came back while the other transaction still held the lock."""
    locked = threading.Event()
    started = threading.Event()
    finished = threading.Event()
    still_held_when_done: list[bool] = []
    problems: list[BaseException] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                Submission.objects.select_for_update().filter(pk=pk).update(updated_at=timezone.now())
                locked.set()
                started.wait(10)
                # Row-locking databases answer ``run`` while this lock is held; on SQLite ``run`` waits for it,
                # so this gives it up after a moment (the order is asserted, not the time).
                finished.wait(0.3 if connection.vendor == "sqlite" else 10)
                still_held_when_done.append(finished.is_set())
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)
        finally:
            close_old_connections()
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(10)
    started.set()
    result = run()
    finished.set()
    thread.join(15)
    assert not problems, problems
    return result, still_held_when_done == [True]


@pytest.mark.django_db(transaction=True)
def test_a_lease_skips_the_oldest_row_while_another_transaction_holds_it(
    queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    first = submit(queue, lms_user, callback_url="http://127.0.0.1:9/1").pk
    second = submit(queue, lms_user, callback_url="http://127.0.0.1:9/2").pk
    lease, answered_while_held = _hold_lock_then_run(first, lambda: lifecycle.lease_next(queue, grader_user))
    assert lease is not None
    if ROW_LOCKING[connection.vendor]:
        assert (lease.submission_id, answered_while_held) == (second, True)
        assert statuses(first, second) == ["queued", "pulled"]
    else:
        assert (lease.submission_id, answered_while_held) == (first, False)
        assert statuses(first, second) == ["pulled", "queued"]


@pytest.mark.django_db(transaction=True)
def test_a_scoring_run_skips_a_reply_another_transaction_holds(queue: Queue, lms_user: Any, grader_user: Any) -> None:
    first = returned(queue, lms_user, grader_user, grade(), 1)
    second = returned(queue, lms_user, grader_user, grade(), 2)
    (taken, claims), answered_while_held = _hold_lock_then_run(first, lambda: lifecycle.score_returned_batch(10))
    if ROW_LOCKING[connection.vendor]:
        assert (taken, [c.submission_id for c in claims], answered_while_held) == (1, [second], True)
        assert statuses(first, second) == ["returned", "graded"]
    else:
        assert (taken, sorted(c.submission_id for c in claims), answered_while_held) == (2, [first, second], False)
        assert statuses(first, second) == ["graded", "graded"]


@pytest.mark.parametrize(
    ("case", "expected", "status_after"),
    [
        ("the lease's key", ResultOutcome.ACCEPTED, "returned"),
        ("the lease's key, twice, same reply", ResultOutcome.DUPLICATE, "returned"),
        ("the lease's key, twice, another reply", ResultOutcome.WRONG_KEY, "returned"),
        ("the key with a trailing space", ResultOutcome.WRONG_KEY, "pulled"),
        ("the key in other letter case", ResultOutcome.WRONG_KEY, "pulled"),
        ("the key, after the lease expired", ResultOutcome.WRONG_KEY, "pulled"),
        ("the key, from a grader of another queue", ResultOutcome.NO_SUCH_SUBMISSION, "pulled"),
        ("the key, for an id that does not exist", ResultOutcome.NO_SUCH_SUBMISSION, "pulled"),
    ],
)
@pytest.mark.django_db
def test_a_result_is_taken_only_with_its_exact_lease(
    queue: Queue,
    other_queue: Queue,
    lms_user: Any,
    grader_user: Any,
    case: str,
    expected: ResultOutcome,
    status_after: str,
) -> None:
    pk = submit(queue, lms_user).pk
    with time_machine.travel(timezone.now(), tick=False) as clock:
        lease = lifecycle.lease_next(queue, grader_user)
        assert lease is not None and lease.submission_id == pk
        key, target, queues, reply = lease.key, pk, [queue.pk], grade()
        if case.startswith("the lease's key, twice"):
            assert lifecycle.accept_result(pk, key, reply, grader_user, queues) is ResultOutcome.ACCEPTED
            if case.endswith("another reply"):
                reply = grade(score=0.5)
        elif case == "the key with a trailing space":
            key += " "
        elif case == "the key in other letter case":
            key = key.swapcase()
            assert key != lease.key  # 43 random characters: some are letters
        elif case == "the key, after the lease expired":
            clock.shift(timedelta(seconds=301))
        elif case == "the key, from a grader of another queue":
            queues = [other_queue.pk]
        elif case == "the key, for an id that does not exist":
            target = pk + 1000
        assert lifecycle.accept_result(target, key, reply, grader_user, queues) is expected
    row = Submission.objects.get(pk=pk)
    assert row.status == status_after
    assert row.grader_reply == (grade() if status_after == "returned" else "")
    assert list(row.events.values_list("to_status", flat=True)) == (
        ["queued", "pulled", "returned"] if status_after == "returned" else ["queued", "pulled"]
    )


@pytest.mark.django_db
def test_a_transition_from_a_state_the_row_has_left_changes_nothing(queue: Queue, lms_user: Any) -> None:
    pk = submit(queue, lms_user).pk
    assert lifecycle.transition(pk, Status.QUEUED, Status.CANCELLED, reason="cancel", actor="op") is True
    assert lifecycle.transition(pk, Status.QUEUED, Status.SUPERSEDED, reason="superseded", actor="op") is False
    assert statuses(pk) == ["cancelled"]
    assert list(Submission.objects.get(pk=pk).events.values_list("to_status", flat=True)) == ["queued", "cancelled"]


@pytest.mark.django_db
def test_scoring_takes_the_oldest_replies_grades_usable_ones_fails_the_rest_and_takes_each_once(
    queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    good = returned(queue, lms_user, grader_user, grade(msg="<p>🎓</p>"), 1)
    bad = returned(queue, lms_user, grader_user, "not json", 2)
    late = returned(queue, lms_user, grader_user, grade(), 3)

    taken, claims = lifecycle.score_returned_batch(2)
    assert taken == 2
    assert [(c.submission_id, c.status, c.attempt, c.lms_body, c.queue) for c in claims] == [
        (good, "graded", 1, grade(msg="<p>🎓</p>"), "test-123")
    ]
    assert claims[0].callback_url == "http://127.0.0.1:9/returned/1"
    assert statuses(good, bad, late) == ["graded", "failed", "returned"]
    failed = Submission.objects.get(pk=bad)
    assert failed.failure_reason == "grader reply: the reply is not JSON"
    assert json.loads(failed.lms_body)["correct"] is None
    graded = Submission.objects.get(pk=good)
    assert (graded.lms_body, graded.delivery_attempts, graded.delivery_started_at) == (
        grade(msg="<p>🎓</p>"),
        1,
        claims[0].started_at,
    )
    assert graded.next_delivery_at == claims[0].started_at + lifecycle.delivery_guard()
    assert list(graded.events.values_list("from_status", "to_status", "reason", "actor"))[-1] == (
        "returned",
        "graded",
        "scored",
        "system:scoring",
    )

    taken, claims = lifecycle.score_returned_batch(10)
    assert (taken, [c.submission_id for c in claims]) == (1, [late])
    assert lifecycle.score_returned_batch(10) == (0, [])
    assert lifecycle.score_and_claim(late) is None
    assert SubmissionEvent.objects.filter(to_status="graded").count() == 2


@pytest.mark.django_db
def test_a_delivery_is_recorded_only_for_the_attempt_its_claim_made(
    queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    current = returned(queue, lms_user, grader_user, grade(), 1)
    stale = returned(queue, lms_user, grader_user, grade(), 2)
    _taken, claims = lifecycle.score_returned_batch(10)
    by_id = {c.submission_id: c for c in claims}
    old = by_id[stale]
    stale_claim = DeliveryClaim(stale, old.status, old.attempt + 1, old.callback_url, "", "", old.started_at, "")
    outcomes = lifecycle.record_deliveries([(by_id[current], 200, "", 5), (stale_claim, 200, "", 5)])
    assert outcomes == [(DeliveryOutcome.DELIVERED, None)] * 2  # what the LMS answered
    assert statuses(current, stale) == ["delivered", "graded"]
    event = SubmissionEvent.objects.filter(submission_id=current).last()
    assert event is not None
    assert (event.from_status, event.to_status, event.reason, event.details) == (
        "graded",
        "delivered",
        "delivered",
        {"attempt": 1, "http_status": 200, "duration_ms": 5},
    )
    assert not SubmissionEvent.objects.filter(submission_id=stale, to_status="delivered").exists()


@pytest.mark.django_db
def test_only_the_exact_same_callback_url_supersedes(queue: Queue, lms_user: Any) -> None:
    url = "http://127.0.0.1:9/courses/x/xqueue/7/problem/score_update"
    first = submit(queue, lms_user, callback_url=url).pk
    lookalikes = (url + " ", url.upper(), url.replace("x", "\u0445"))  # the last with a Cyrillic ha
    near = [submit(queue, lms_user, callback_url=u).pk for u in lookalikes]
    assert statuses(first, *near) == ["queued"] * 4
    newest = submit(queue, lms_user, callback_url=url).pk
    assert statuses(first, *near, newest) == ["superseded", "queued", "queued", "queued", "queued"]
    assert Submission.objects.get(pk=first).superseded_by_id == newest


TEXTS = {
    # Emoji, two mathematical letters, a CJK ideograph and a private-use character of the last plane.
    "emoji and other 4-byte characters": "🎓✅ \U0001d518\U0001d52b 𠜎 \U0010fffd",
    "the edges of the planes": "\x01\x7f\x80\u07ff\u0800\ufeff\uffff\U00010000\U0010ffff",
    "combining and precomposed, kept apart": "e\u0301 é Å Å",
    "100 kB of 4-byte characters": "😀" * 25_000,
    "100 kB and a byte past 64 KiB": "x" * 65_536 + "y" * 34_464,
    "quotes, backslashes and SQL": "'; DROP TABLE grading_submission; -- \\\" %s %(x)s",
}


@pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))
@pytest.mark.django_db
def test_text_round_trips_byte_for_byte(queue: Queue, lms_user: Any, grader_user: Any, text: str) -> None:
    reply = json.dumps({"correct": True, "score": 1, "msg": text}, ensure_ascii=False)
    header = {"lms_callback_url": "http://127.0.0.1:9/cb", "lms_key": text[:64], "queue_name": queue.name}
    submission, _length = lifecycle.submit(
        lifecycle.NewSubmission(
            queue=queue,
            lms_header=json.dumps(header, ensure_ascii=False),
            lms_callback_url="http://127.0.0.1:9/cb",
            lms_key=text[:64],
            body=text,
            files={text[:40]: "submissions/x"},
        ),
        lms_user,
    )
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None
    assert (lease.body.encode(), lease.files) == (text.encode(), {text[:40]: "submissions/x"})
    assert lifecycle.accept_result(submission.pk, lease.key, reply, grader_user, [queue.pk]) is ResultOutcome.ACCEPTED
    _taken, claims = lifecycle.score_returned_batch(10)
    assert [c.lms_body.encode() for c in claims] == [reply.encode()]
    assert json.loads(claims[0].lms_header)["lms_key"] == text[:64]
    row = Submission.objects.get(pk=submission.pk)
    assert (row.body.encode(), row.grader_reply.encode(), row.lms_key) == (text.encode(), reply.encode(), text[:64])


def test_a_mysql_url_selects_mysql_with_utf8mb4_strict_mode_and_read_committed() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADEQUEUE_", "DJANGO_", "PYTEST", "DATABASE"))}
    env.update({"GRADEQUEUE_DEV": "1", "DJANGO_SETTINGS_MODULE": "config.settings"})
    env["DATABASE_URL"] = "mysql://grading:s%40cret@db.example.org:3307/gq"
    # The settings alone: the driver (mysqlclient, the "mysql" extra) need not be installed to read them.
    code = (
        "import json; from django.conf import settings; "
        "print(json.dumps([settings.DATABASES['default'], settings.SILENCED_SYSTEM_CHECKS]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    database, silenced = json.loads(result.stdout)
    assert {k: database[k] for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "CONN_MAX_AGE")} == {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "gq",
        "USER": "grading",
        "PASSWORD": "s@cret",
        "HOST": "db.example.org",
        "PORT": 3307,
        "CONN_MAX_AGE": 600,
    }
    assert database["OPTIONS"] == {
        "charset": "utf8mb4",
        "isolation_level": "read committed",
        "init_command": "SET sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
    }
    assert database["TEST"]["CHARSET"] == "utf8mb4"
    assert database["TEST"]["COLLATION"] == "utf8mb4_bin"
    assert database["CONN_HEALTH_CHECKS"] is True
    # MySQL ignores index conditions (W037) and INCLUDE columns (W040): migration 0010 makes its own indexes
    assert silenced == ["models.W037", "models.W040"]
