"""A slow LMS never gets a grade twice: each POST's outcome is recorded as it returns, and a delivery claim
is renewed while its holder still works on it, so the sweep never hands it to a second worker meanwhile.

A real worker (4 threads) on the real broker, a real HTTP LMS that answers just under the delivery timeout,
and the sweep run as often as beat could.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from grading import delivery, lifecycle, scoring_signal
from grading.models import Status, Submission, SubmissionEvent
from tests.conftest import fast_pipeline
from tests.lms import Callback, FakeLMS, free_port
from tests.support.states import returned, statuses
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]


def test_slow_lms_burst_larger_than_a_batch_with_four_workers_gets_every_grade_exactly_once(
    settings: Any, celery_worker_app: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    # The LMS answers in 1.6 s, the timeout is 2.5 s (the margin is for a loaded machine: a POST that times
    # out is retried, and that repeat is HTTP's, not a takeover): a claim's guard (2 x 2.5 + 1 = 6 s) is
    # shorter than the 64 POSTs take eight at a time (12.8 s), and the batch (16) is a quarter of the burst.
    fast_pipeline(settings, DELIVERY_TIMEOUT=2.5, SCORE_BATCH=16)
    lms = FakeLMS(on_request=lambda _cb: time.sleep(1.6)).start()
    stop = threading.Event()
    swept: list[dict[str, int]] = []

    def beat() -> None:
        # The sweep, with no grace (fast_pipeline), as often as it could ever run.
        try:
            while not stop.wait(0.25):
                swept.append(lifecycle.sweep_followups())
        finally:
            connection.close()

    sweeper = threading.Thread(target=beat)
    try:
        with pytest.MonkeyPatch.context() as patch:
            # The burst is committed first, then the four worker threads take it in runs.
            patch.setattr(scoring_signal, "request_scoring", lambda **kwargs: None)
            ids = returned(queue, lms_user, grader_user, lms, 64)
        sweeper.start()
        for _ in range(4):
            scoring_signal.request_scoring(force=True)
        wait_for(lambda: statuses(ids) == {Status.DELIVERED: 64}, timeout=90, what="64 deliveries")
        time.sleep(3.0)  # a takeover would POST again within a guard's time
    finally:
        stop.set()
        if sweeper.is_alive():
            sweeper.join(10)
        lms.stop()
    assert swept, "the sweep never ran"
    assert lms.deliveries_per_key() == {f"k{i}": 1 for i in range(64)}
    assert len(lms.callbacks) == 64
    for pk in ids:
        events = list(Submission.objects.get(pk=pk).events.values_list("reason", "details"))
        assert [reason for reason, _ in events] == ["submitted", "lease", "result", "scored", "delivered"]
        assert events[-1][1]["attempt"] == 1
        assert events[-1][1]["http_status"] == 200


def test_each_post_is_recorded_as_it_returns_not_at_the_end_of_the_batch(
    settings: Any,
    held: list[str],
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings, DELIVERY_TIMEOUT=30.0)
    seen: list[bool] = []

    def slow_first(callback: Callback) -> None:
        # The first student's LMS answers only once the other eight grades show as delivered (or gives up
        # after 10 s): had they waited for this one, they would still be graded.
        if callback.lms_key != "k0":
            return
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if Submission.objects.filter(status=Status.DELIVERED).count() == 8:
                    seen.append(True)
                    return
                time.sleep(0.02)
            seen.append(False)
        finally:
            connection.close()

    lms = FakeLMS(on_request=slow_first).start()
    try:
        ids = returned(queue, lms_user, grader_user, lms, 9)
        _taken, claims = lifecycle.score_returned_batch(9)
        assert len(claims) == 9
        outcomes = delivery.send_many(claims)
    finally:
        lms.stop()
    assert seen == [True]
    assert outcomes == [lifecycle.DeliveryOutcome.DELIVERED] * 9
    assert statuses(ids) == {Status.DELIVERED: 9}
    first = Submission.objects.get(pk=ids[0])
    others = Submission.objects.filter(pk__in=ids[1:])
    assert all(other.delivered_at < first.delivered_at for other in others)


def test_the_claim_of_a_post_still_outstanding_is_renewed_while_the_others_are_recorded(
    settings: Any,
    held: list[str],
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    # A guard of 2 x 4 + 1 = 9 s, renewed every 2 s while a POST is outstanding.
    fast_pipeline(settings, DELIVERY_TIMEOUT=4.0)
    guards: list[Any] = []

    def hold_first(callback: Callback) -> None:
        # The first student's LMS answers only once it sees that grade's claim pushed past the guard it was
        # scored with (or gives up after 3.6 s, within the timeout).
        if callback.lms_key != "k0":
            return
        try:
            deadline = time.monotonic() + 3.6
            while time.monotonic() < deadline:
                guard = Submission.objects.values_list("next_delivery_at", flat=True).get(lms_key="k0")
                if guard > guards[0]:
                    guards.append(guard)
                    # The other grade was recorded meanwhile, and its row left alone.
                    assert Submission.objects.get(lms_key="k1").status == Status.DELIVERED
                    return
                time.sleep(0.02)
        finally:
            connection.close()

    lms = FakeLMS(on_request=hold_first).start()
    try:
        ids = returned(queue, lms_user, grader_user, lms, 2)
        _taken, claims = lifecycle.score_returned_batch(2)
        guards.append(Submission.objects.get(pk=ids[0]).next_delivery_at)
        outcomes = delivery.send_many(claims)
    finally:
        lms.stop()
    assert len(guards) == 2, "the claim was not renewed while its POST was outstanding"
    assert outcomes == [lifecycle.DeliveryOutcome.DELIVERED] * 2
    # Renewed about 2 s after it was taken: a full guard (9 s) past the renewal.
    assert timedelta(seconds=1.0) <= guards[1] - guards[0] <= timedelta(seconds=3.6)


def test_an_lms_answer_to_a_claim_that_was_taken_over_stays_in_the_timeline(
    queue: Any,
    lms_user: Any,
    grader_user: Any,
    held: list[str],
) -> None:
    [pk] = returned(queue, lms_user, grader_user, FakeLMS(port=free_port()), 1)
    first = lifecycle.score_and_claim(pk)
    assert first is not None and first.attempt == 1
    # The first claim lapsed (its worker was stopped, say); a second worker takes the grade and delivers it.
    Submission.objects.filter(pk=pk).update(next_delivery_at=timezone.now())
    second = lifecycle.claim_delivery(pk)
    assert second is not None and second.attempt == 2
    assert lifecycle.record_delivery(second, http_status=200, error="", duration_ms=4)[0] is (
        lifecycle.DeliveryOutcome.DELIVERED
    )
    # Then the LMS's answer to the first POST comes back: nothing changes, and the timeline keeps it.
    lifecycle.record_deliveries([(first, 200, "", 1500)])
    late = SubmissionEvent.objects.get(submission_id=pk, reason="late_answer")
    assert (late.from_status, late.to_status, late.actor) == ("delivered", "delivered", "system:delivery")
    assert late.details == {
        "attempt": 1,
        "http_status": 200,
        "duration_ms": 1500,
        "why": "the submission was delivered, at delivery attempt 2, when the LMS answered",
    }
    # A 500 to a stale claim is kept too.
    lifecycle.record_delivery(first, http_status=500, error="", duration_ms=9)
    assert SubmissionEvent.objects.filter(submission_id=pk, reason="late_answer").count() == 2
    submission = Submission.objects.get(pk=pk)
    assert (submission.status, submission.delivery_attempts) == (Status.DELIVERED, 2)
    assert json.loads(submission.lms_body)["correct"] is True
