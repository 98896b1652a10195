"""The lifecycle module: the transition map edge by edge, leases, results, reclaiming, scoring."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from grading import grades, lifecycle, scoring_signal
from grading.lifecycle import TRANSITIONS, InvalidTransition, ResultOutcome
from grading.models import Status, Submission
from tests.conftest import submit
from tests.xqclient import grade

ALL_EDGES = [(a, b) for a in Status for b in Status]

# The allowed edges, written down by hand from the lifecycle's design (not read from TRANSITIONS): a wrong
# edge added to or dropped from the map fails test_transition_map_edge. A self-edge records a delivery retry.
EXPECTED_EDGES: frozenset[tuple[str, str]] = frozenset(
    {
        ("queued", "pulled"),
        ("queued", "failed"),
        ("queued", "superseded"),
        ("queued", "cancelled"),
        ("pulled", "queued"),
        ("pulled", "returned"),
        ("pulled", "failed"),
        ("pulled", "superseded"),
        ("pulled", "cancelled"),
        ("returned", "graded"),
        ("returned", "failed"),
        ("returned", "superseded"),
        ("returned", "cancelled"),
        ("graded", "graded"),
        ("graded", "failed"),  # posting the grade raised: the LMS is sent the notice instead
        ("graded", "delivered"),
        ("graded", "dead_letter"),
        ("graded", "superseded"),
        ("graded", "cancelled"),
        ("failed", "failed"),
        ("failed", "delivered"),
        ("failed", "dead_letter"),
        ("failed", "queued"),
        ("failed", "superseded"),
        ("failed", "cancelled"),
        ("delivered", "queued"),
        ("dead_letter", "graded"),
        ("dead_letter", "failed"),
        ("dead_letter", "queued"),
        ("dead_letter", "superseded"),
        ("dead_letter", "cancelled"),
    }
)


@pytest.mark.parametrize(("source", "target"), ALL_EDGES, ids=[f"{a}->{b}" for a, b in ALL_EDGES])
@pytest.mark.django_db
def test_transition_map_edge(queue: Any, lms_user: Any, source: Status, target: Status) -> None:
    submission = submit(queue, lms_user)
    Submission.objects.filter(pk=submission.pk).update(status=source)
    if (source.value, target.value) in EXPECTED_EDGES:
        assert lifecycle.transition(submission.pk, source, target, reason="test", actor="test")
        submission.refresh_from_db()
        assert submission.status == target
        event = submission.events.last()
        assert (event.from_status, event.to_status, event.reason, event.actor) == (
            source,
            target,
            "test",
            "test",
        )
    else:
        with pytest.raises(InvalidTransition):
            lifecycle.transition(submission.pk, source, target, reason="test", actor="test")
        submission.refresh_from_db()
        assert submission.status == source


def test_the_map_names_every_status_and_terminal_states_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets} == EXPECTED_EDGES
    assert TRANSITIONS[Status.SUPERSEDED] == frozenset()
    assert TRANSITIONS[Status.CANCELLED] == frozenset()


@pytest.mark.django_db
def test_transition_from_a_stale_state_changes_nothing(queue: Any, lms_user: Any) -> None:
    submission = submit(queue, lms_user)
    assert not lifecycle.transition(submission.pk, Status.PULLED, Status.QUEUED, reason="x", actor="x")
    assert submission.events.count() == 1


@pytest.mark.django_db
def test_lease_goes_oldest_first_and_each_lease_has_a_new_key(queue: Any, lms_user: Any, grader_user: Any) -> None:
    first = submit(queue, lms_user, callback_url="http://127.0.0.1:9/a")
    second = submit(queue, lms_user, callback_url="http://127.0.0.1:9/b")
    one = lifecycle.lease_next(queue, grader_user)
    two = lifecycle.lease_next(queue, grader_user)
    assert (one.submission_id, two.submission_id) == (first.pk, second.pk)
    assert one.key != two.key
    assert lifecycle.lease_next(queue, grader_user) is None


@pytest.mark.django_db
def test_expired_lease_is_handed_out_again_with_a_new_key_and_old_key_is_refused(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    submission = submit(queue, lms_user)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        old = lifecycle.lease_next(queue, grader_user)
        clock.shift(timedelta(seconds=301))
        assert lifecycle.reclaim_expired() == {"requeued": 1, "failed": 0}
        new = lifecycle.lease_next(queue, grader_user)
    assert new.submission_id == submission.pk
    assert new.key != old.key
    assert new.attempt == 2
    ids = [queue.pk]
    assert lifecycle.accept_result(submission.pk, old.key, grade(), grader_user, ids) is ResultOutcome.WRONG_KEY
    assert lifecycle.accept_result(submission.pk, new.key, grade(), grader_user, ids) is ResultOutcome.ACCEPTED


@pytest.mark.django_db
def test_a_result_is_taken_only_within_the_graders_queues(
    queue: Any, other_queue: Any, lms_user: Any, grader_user: Any
) -> None:
    submission = submit(queue, lms_user)
    lease = lifecycle.lease_next(queue, grader_user)
    # Queue ids reach PostgreSQL as array text: none, one other, several.
    for ids in ([], [other_queue.pk]):
        outcome = lifecycle.accept_result(submission.pk, lease.key, grade(), grader_user, ids)
        assert outcome is ResultOutcome.NO_SUCH_SUBMISSION
    assert Submission.objects.get(pk=submission.pk).status == Status.PULLED
    ids = [other_queue.pk, queue.pk]
    assert lifecycle.accept_result(submission.pk, lease.key, grade(), grader_user, ids) is ResultOutcome.ACCEPTED
    assert Submission.objects.get(pk=submission.pk).status == Status.RETURNED


@pytest.mark.django_db
def test_result_after_the_lease_expired_is_refused_even_before_reclaim(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    submission = submit(queue, lms_user)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        lease = lifecycle.lease_next(queue, grader_user)
        clock.shift(timedelta(seconds=300))
        outcome = lifecycle.accept_result(submission.pk, lease.key, grade(), grader_user, [queue.pk])
    assert outcome is ResultOutcome.WRONG_KEY


@pytest.mark.django_db
def test_per_queue_lease_length_overrides_the_default(queue: Any, lms_user: Any, grader_user: Any) -> None:
    queue.lease_seconds = 30
    queue.save()
    submit(queue, lms_user)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        lifecycle.lease_next(queue, grader_user)
        clock.shift(timedelta(seconds=29))
        assert lifecycle.reclaim_expired()["requeued"] == 0
        clock.shift(timedelta(seconds=2))
        assert lifecycle.reclaim_expired()["requeued"] == 1


@pytest.mark.django_db
def test_lease_expiring_max_attempts_times_fails_with_notice(queue: Any, lms_user: Any, grader_user: Any) -> None:
    submission = submit(queue, lms_user)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(3):
            assert lifecycle.lease_next(queue, grader_user) is not None
            clock.shift(timedelta(seconds=301))
            lifecycle.reclaim_expired()
    submission.refresh_from_db()
    assert submission.status == Status.FAILED
    assert submission.attempts == 3
    assert json.loads(submission.lms_body)["correct"] is None
    assert "could not be graded" in json.loads(submission.lms_body)["msg"]
    assert lifecycle.lease_next(queue, grader_user) is None
    reasons = list(submission.events.values_list("to_status", "reason"))
    assert reasons[-1] == ("failed", "lease_expired")
    assert reasons.count(("queued", "lease_expired")) == 2


@pytest.mark.django_db
def test_reclaim_does_not_touch_a_row_leased_again_meanwhile(queue: Any, lms_user: Any, grader_user: Any) -> None:
    submission = submit(queue, lms_user)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        lifecycle.lease_next(queue, grader_user)
        clock.shift(timedelta(seconds=301))
        lifecycle.reclaim_expired()
        fresh = lifecycle.lease_next(queue, grader_user)
        assert lifecycle.reclaim_expired() == {"requeued": 0, "failed": 0}
    submission.refresh_from_db()
    assert submission.lease_key == fresh.key


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"correct": True, "score": 1}), "lacks msg"),
        (json.dumps({"correct": "yes", "score": 1, "msg": ""}), "'correct'"),
        (json.dumps({"correct": True, "score": "1", "msg": ""}), "'score'"),
        (json.dumps({"correct": True, "score": True, "msg": ""}), "'score'"),
        (json.dumps({"correct": True, "score": 1, "msg": 5}), "'msg'"),
    ],
)
@pytest.mark.django_db
def test_unusable_reply_fails_with_reason_and_notice(
    queue: Any, lms_user: Any, grader_user: Any, reply: str, problem: str
) -> None:
    submission = submit(queue, lms_user)
    lease = lifecycle.lease_next(queue, grader_user)
    lifecycle.accept_result(submission.pk, lease.key, reply, grader_user, [queue.pk])
    assert lifecycle.score_and_claim(submission.pk) is None  # no grade to claim a delivery for
    submission.refresh_from_db()
    assert submission.status == Status.FAILED
    assert problem in submission.failure_reason
    assert submission.lms_body == grades.not_graded_notice()
    assert submission.grader_reply == reply


@pytest.mark.django_db
def test_usable_reply_is_graded_verbatim_and_scoring_twice_is_a_no_op(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    submission = submit(queue, lms_user)
    lease = lifecycle.lease_next(queue, grader_user)
    lifecycle.accept_result(submission.pk, lease.key, grade(False, 0.5), grader_user, [queue.pk])
    assert lifecycle.score_and_claim(submission.pk) is not None
    assert lifecycle.score_and_claim(submission.pk) is None
    submission.refresh_from_db()
    assert submission.status == Status.GRADED
    assert submission.lms_body == grade(False, 0.5)


def test_backoff_grows_exponentially_within_jitter_and_is_capped(settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "DELIVERY_BACKOFF_BASE": 2.0, "DELIVERY_BACKOFF_CAP": 60.0}
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (20, 60)]:
        for _ in range(50):
            assert ceiling / 2 <= lifecycle.backoff_delay(attempt) <= ceiling


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (None, True),
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (404, False),
        (400, False),
        (302, False),
    ],
)
def test_transient_delivery_failures(status: int | None, transient: bool) -> None:
    assert lifecycle.is_transient(status) is transient


# --- One submission never stops the others --------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("[" * 100_000, "the reply is nested too deeply"),
        ('{"a": ' * 100_000, "the reply is nested too deeply"),
        ('{"correct": true, "score": 1' + "0" * 5000 + ', "msg": ""}', "the reply is not JSON"),
        ('{"correct": true, "score": 1, "msg": "a\x00b"}', "the reply is not JSON"),
        ('{"correct": true, "score": 1e999, "msg": ""}', "'score' is not a finite number"),
        ('{"correct": true, "score": NaN, "msg": ""}', "'score' is not a finite number"),
        (None, "the reply is not JSON"),
    ],
    ids=["array-100000-deep", "object-100000-deep", "5000-digit-score", "raw-nul", "1e999", "nan", "none"],
)
def test_validate_grade_names_the_problem_of_a_hostile_reply_and_never_raises(reply: Any, problem: str) -> None:
    assert grades.validate_grade(reply) == problem


def test_validate_grade_turns_anything_that_raises_into_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(reply: str) -> str | None:
        raise KeyError("a defect")

    monkeypatch.setattr(grades, "_check_grade", broken)
    assert grades.validate_grade(grade()) == "the reply could not be checked (KeyError)"


@pytest.mark.django_db(transaction=True)
def test_a_reply_whose_scoring_raises_fails_alone_and_the_batch_is_scored(
    monkeypatch: pytest.MonkeyPatch, caplog: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    monkeypatch.setattr(scoring_signal, "request_scoring", lambda **kwargs: None)
    ids = []
    for i in range(5):
        submission = submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/{i}", lms_key=f"k{i}")
        lease = lifecycle.lease_next(queue, grader_user)
        reply = grade(msg="<p>breaks scoring</p>") if i == 1 else grade(msg=f"<p>{i}</p>")
        assert lifecycle.accept_result(submission.pk, lease.key, reply, grader_user, [queue.pk]) is (
            ResultOutcome.ACCEPTED
        )
        ids.append(submission.pk)
    real = grades.validate_grade

    def defect(reply: str) -> str | None:
        # A defect of the scoring code for this one reply (on PostgreSQL it rolls the whole batch back).
        if "breaks scoring" in reply:
            raise RuntimeError("scoring defect\x00")
        return real(reply)

    monkeypatch.setattr(grades, "validate_grade", defect)
    taken, claims = lifecycle.score_returned_batch(10)
    assert taken == 5
    assert sorted(c.submission_id for c in claims) == [ids[0], *ids[2:]]
    broken = Submission.objects.get(pk=ids[1])
    assert broken.status == Status.FAILED
    assert broken.failure_reason == "scoring raised RuntimeError: scoring defect\\x00"
    assert broken.lms_body == grades.not_graded_notice()
    assert broken.events.filter(to_status=Status.FAILED, reason="scoring_error").count() == 1
    assert Submission.objects.filter(pk__in=ids, status=Status.GRADED).count() == 4
    assert any(
        r.levelname == "ERROR" and f"submission {ids[1]}: scoring raised RuntimeError" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.django_db
def test_extend_claims_renews_only_the_claims_given(queue: Any, lms_user: Any, grader_user: Any) -> None:
    claims = []
    for i in range(3):
        submission = submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/{i}", lms_key=f"k{i}")
        lease = lifecycle.lease_next(queue, grader_user)
        lifecycle.accept_result(submission.pk, lease.key, grade(), grader_user, [queue.pk])
        claims.append(lifecycle.score_and_claim(submission.pk))
    later = timezone.now() + timedelta(minutes=5)
    # The third claim has moved on (a later attempt holds the grade): renewing the old one leaves it be.
    Submission.objects.filter(pk=claims[2].submission_id).update(delivery_attempts=2)
    before = dict(Submission.objects.values_list("pk", "next_delivery_at"))
    assert lifecycle.extend_claims([claims[0], claims[2]], now=later) == 1
    after = dict(Submission.objects.values_list("pk", "next_delivery_at"))
    assert after[claims[0].submission_id] == later + lifecycle.delivery_guard()
    assert after[claims[1].submission_id] == before[claims[1].submission_id]
    assert after[claims[2].submission_id] == before[claims[2].submission_id]
    assert lifecycle.extend_claims([]) == 0


def test_printable_escapes_what_databases_refuse() -> None:
    assert lifecycle.printable("a\x00b\ud800c") == "a\\x00b\\ud800c"
    assert lifecycle.printable("x" * 600) == "x" * 500
