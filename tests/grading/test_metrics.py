"""The Prometheus endpoint after a scripted run of submissions through the real lifecycle and delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from grading import delivery, lifecycle
from grading.models import Queue, Status, Submission
from tests.conftest import submit
from tests.lms import FakeLMS
from tests.xqclient import grade

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)


def scrape(client: Client | None = None, **extra: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def lease_and_answer(queue: Queue, grader: Any, reply: str) -> int:
    lease = lifecycle.lease_next(queue, grader)
    assert lease is not None
    assert (
        lifecycle.accept_result(lease.submission_id, lease.key, reply, grader, [queue.pk])
        == lifecycle.ResultOutcome.ACCEPTED
    )
    return lease.submission_id


@pytest.fixture
def scripted_run(
    queue: Queue, other_queue: Queue, lms_user: Any, grader_user: Any, fake_lms: FakeLMS, settings: Any
) -> dict[str, int]:
    """Two queues through a morning of grading, at fixed times.

    test-123: one graded and delivered (10 s to grade, 0.5 s to deliver), one whose lease expired and which
    is leased again, one waiting. other-queue: one graded whose delivery failed twice (500, then 404: dead
    letter), one with an unusable grader reply (failed, notice not yet delivered).
    """
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "LEASE_SECONDS": 60, "MAX_ATTEMPTS": 3}
    from grading.models import QueueGrant, Role

    QueueGrant.objects.create(user=lms_user, queue=other_queue, role=Role.LMS)
    QueueGrant.objects.create(user=grader_user, queue=other_queue, role=Role.GRADER)
    fake_lms.script = [200, 500, 404]
    with time_machine.travel(T0, tick=False) as clock:
        delivered = submit(queue, lms_user, fake_lms.callback_url(1, "a"))
        expired = submit(queue, lms_user, fake_lms.callback_url(2, "a"))
        waiting = submit(queue, lms_user, fake_lms.callback_url(3, "a"))
        dead = submit(other_queue, lms_user, fake_lms.callback_url(4, "b"))
        failed = submit(other_queue, lms_user, fake_lms.callback_url(5, "b"))

        clock.shift(10)
        assert lease_and_answer(queue, grader_user, grade(True, 1.0)) == delivered.pk
        claim = lifecycle.score_and_claim(delivered.pk)
        assert claim is not None
        clock.shift(0.5)
        assert delivery.send(claim) == lifecycle.DeliveryOutcome.DELIVERED

        assert lifecycle.lease_next(queue, grader_user).submission_id == expired.pk
        clock.shift(61)
        assert lifecycle.reclaim_expired() == {"requeued": 1, "failed": 0}
        # FIFO: the requeued submission is the oldest, so it is leased again; the third keeps waiting.
        assert lifecycle.lease_next(queue, grader_user).submission_id == expired.pk

        assert lease_and_answer(other_queue, grader_user, grade(False, 0.0)) == dead.pk
        claim = lifecycle.score_and_claim(dead.pk)
        assert claim is not None
        assert delivery.send(claim) == lifecycle.DeliveryOutcome.RETRY
        clock.shift(5)  # past the first back-off (at most 2 s)
        assert delivery.deliver(dead.pk) == lifecycle.DeliveryOutcome.DEAD

        assert lease_and_answer(other_queue, grader_user, "not json") == failed.pk
        assert lifecycle.score_and_claim(failed.pk) is None  # failed: no grade to claim a delivery for
    assert Submission.objects.get(pk=failed.pk).status == Status.FAILED
    return {
        "delivered": delivered.pk,
        "expired": expired.pk,
        "waiting": waiting.pk,
        "dead": dead.pk,
        "failed": failed.pk,
    }


def test_metrics_report_per_queue_depth_failures_and_dead_letters(scripted_run: dict[str, int]) -> None:
    now = T0 + timedelta(minutes=30)
    with time_machine.travel(now, tick=False):
        samples = scrape()
    assert value(samples, "gradequeue_queue_waiting", queue="test-123") == 1
    assert value(samples, "gradequeue_queue_leased", queue="test-123") == 1
    assert value(samples, "gradequeue_queue_failed", queue="test-123") == 0
    assert value(samples, "gradequeue_queue_dead_letter", queue="test-123") == 0
    assert value(samples, "gradequeue_queue_waiting", queue="other-queue") == 0
    assert value(samples, "gradequeue_queue_failed", queue="other-queue") == 1
    assert value(samples, "gradequeue_queue_dead_letter", queue="other-queue") == 1
    assert value(samples, "gradequeue_queue_oldest_waiting_age_seconds", queue="test-123") == 1800
    assert value(samples, "gradequeue_queue_oldest_waiting_age_seconds", queue="other-queue") == 0
    assert value(samples, "gradequeue_submissions", queue="test-123", status="delivered") == 1
    assert value(samples, "gradequeue_submissions", queue="other-queue", status="dead_letter") == 1


def test_metrics_count_expired_leases_and_lms_delivery_attempts_and_failures(scripted_run: dict[str, int]) -> None:
    samples = scrape()
    assert value(samples, "gradequeue_leases_expired_total", queue="test-123") == 1
    assert value(samples, "gradequeue_leases_expired_total", queue="other-queue") == 0
    assert value(samples, "gradequeue_lms_delivery_attempts_total", queue="test-123") == 1
    assert value(samples, "gradequeue_lms_delivery_failures_total", queue="test-123") == 0
    assert value(samples, "gradequeue_lms_delivery_attempts_total", queue="other-queue") == 2
    assert value(samples, "gradequeue_lms_delivery_failures_total", queue="other-queue") == 2


def test_metrics_histograms_measure_submit_to_graded_and_graded_to_delivered(scripted_run: dict[str, int]) -> None:
    samples = scrape()
    graded = "gradequeue_submit_to_graded_seconds"
    # test-123: one grade, 10 s after its submission.
    assert value(samples, f"{graded}_count", queue="test-123") == 1
    assert value(samples, f"{graded}_sum", queue="test-123") == pytest.approx(10.0)
    assert value(samples, f"{graded}_bucket", queue="test-123", le="5.0") == 0
    assert value(samples, f"{graded}_bucket", queue="test-123", le="15.0") == 1
    assert value(samples, f"{graded}_bucket", queue="test-123", le="+Inf") == 1
    # other-queue: the dead letter was graded 71.5 s after submission, the failure 76.5 s.
    assert value(samples, f"{graded}_count", queue="other-queue") == 2
    assert value(samples, f"{graded}_sum", queue="other-queue") == pytest.approx(148.0)
    assert value(samples, f"{graded}_bucket", queue="other-queue", le="60.0") == 0
    assert value(samples, f"{graded}_bucket", queue="other-queue", le="120.0") == 2

    delivered = "gradequeue_graded_to_delivered_seconds"
    assert value(samples, f"{delivered}_count", queue="test-123") == 1
    assert value(samples, f"{delivered}_sum", queue="test-123") == pytest.approx(0.5)
    assert value(samples, f"{delivered}_bucket", queue="test-123", le="0.1") == 0
    assert value(samples, f"{delivered}_bucket", queue="test-123", le="0.5") == 1
    assert value(samples, f"{delivered}_count", queue="other-queue") == 0


def test_metrics_are_refused_to_an_address_outside_the_allow_list_without_a_token(queue: Queue) -> None:
    response = Client().get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert b"gradequeue_" not in response.content


def test_metrics_accept_the_configured_bearer_token_from_any_address(queue: Queue, settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "METRICS_TOKEN": "s3cret-token", "METRICS_ALLOWED_NETWORKS": []}
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    wrong = Client().get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    samples = scrape(REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert value(samples, "gradequeue_queue_waiting", queue="test-123") == 0


def test_metrics_allow_list_takes_networks(queue: Queue, settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "METRICS_ALLOWED_NETWORKS": ["10.0.0.0/8"]}
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


# --- Counters rolled up from the event trail ------------------------------------------------------------

COUNTERS = (
    "gradequeue_leases_expired_total",
    "gradequeue_lms_delivery_attempts_total",
    "gradequeue_lms_delivery_failures_total",
    "gradequeue_submit_to_graded_seconds_count",
    "gradequeue_submit_to_graded_seconds_sum",
    "gradequeue_graded_to_delivered_seconds_count",
    "gradequeue_graded_to_delivered_seconds_sum",
)


def counter_values(samples: dict) -> dict[tuple[str, str], float]:
    return {(name, dict(labels)["queue"]): v for (name, labels), v in samples.items() if name in COUNTERS}


def test_counters_show_exactly_the_transitions_made_after_the_last_scrape(
    scripted_run: dict[str, int], queue: Queue, lms_user: Any, grader_user: Any, fake_lms: FakeLMS
) -> None:
    before = scrape()
    assert value(before, "gradequeue_leases_expired_total", queue="test-123") == 1
    # Three more expired leases ("expired" fails at its third), then "waiting" is graded and its grade
    # delivered at the first attempt, 2 s after the grade.
    with time_machine.travel(T0 + timedelta(hours=1), tick=False) as clock:
        assert lifecycle.reclaim_expired() == {"requeued": 1, "failed": 0}
        assert lifecycle.lease_next(queue, grader_user).submission_id == scripted_run["expired"]
        assert lifecycle.lease_next(queue, grader_user).submission_id == scripted_run["waiting"]
        clock.shift(61)
        assert lifecycle.reclaim_expired() == {"requeued": 1, "failed": 1}
        fake_lms.script = [200]
        assert lease_and_answer(queue, grader_user, grade(True, 1.0)) == scripted_run["waiting"]
        claim = lifecycle.score_and_claim(scripted_run["waiting"])
        assert claim is not None
        clock.shift(2)
        assert delivery.send(claim) == lifecycle.DeliveryOutcome.DELIVERED
    after = scrape()
    assert value(after, "gradequeue_leases_expired_total", queue="test-123") == 4
    assert value(after, "gradequeue_lms_delivery_attempts_total", queue="test-123") == 2
    assert value(after, "gradequeue_lms_delivery_failures_total", queue="test-123") == 0
    assert value(after, "gradequeue_graded_to_delivered_seconds_count", queue="test-123") == 2
    assert value(after, "gradequeue_graded_to_delivered_seconds_sum", queue="test-123") == pytest.approx(2.5)
    assert value(after, "gradequeue_graded_to_delivered_seconds_bucket", queue="test-123", le="2.0") == 2
    assert value(after, "gradequeue_graded_to_delivered_seconds_bucket", queue="test-123", le="1.0") == 1
    # The other queue saw nothing new.
    for name in COUNTERS:
        assert value(after, name, queue="other-queue") == value(before, name, queue="other-queue")
    assert value(after, "gradequeue_submissions", queue="test-123", status="delivered") == 2
    assert value(after, "gradequeue_submissions", queue="test-123", status="failed") == 1
    assert value(after, "gradequeue_submissions", queue="test-123", status="queued") == 0
    assert value(after, "gradequeue_submissions", queue="test-123", status="pulled") == 0
    # Graded rounds: the first grade, the failure after three leases, the second grade.
    assert value(after, "gradequeue_submit_to_graded_seconds_count", queue="test-123") == 3


def test_a_second_scrape_without_transitions_counts_nothing_twice(scripted_run: dict[str, int]) -> None:
    first = scrape()
    assert counter_values(scrape()) == counter_values(first)
    assert value(first, "gradequeue_lms_delivery_attempts_total", queue="other-queue") == 2


def test_counters_do_not_go_down_when_purge_deletes_the_submissions_and_their_events(
    scripted_run: dict[str, int],
) -> None:
    from grading import retention
    from grading.models import SubmissionEvent

    before = scrape()
    with time_machine.travel(T0 + timedelta(days=30), tick=False):
        report = retention.purge(timedelta(days=7), include_dead_letter=True)
        assert report.submissions == 2  # the delivered one, and the dead letter
        assert not SubmissionEvent.objects.filter(submission_id__in=[scripted_run["delivered"], scripted_run["dead"]])
        after = scrape()
    assert counter_values(after) == counter_values(before)
    assert value(after, "gradequeue_lms_delivery_attempts_total", queue="other-queue") == 2
    assert value(after, "gradequeue_submit_to_graded_seconds_count", queue="test-123") == 1
    # The kept-by-status gauge follows the rows kept.
    assert value(before, "gradequeue_submissions", queue="test-123", status="delivered") == 1
    assert value(after, "gradequeue_submissions", queue="test-123", status="delivered") == 0
    assert value(after, "gradequeue_submissions", queue="other-queue", status="dead_letter") == 0
    assert value(after, "gradequeue_submissions", queue="other-queue", status="failed") == 1


def test_purge_counts_events_that_no_scrape_has_seen_before_deleting_them(scripted_run: dict[str, int]) -> None:
    from grading import retention

    with time_machine.travel(T0 + timedelta(days=30), tick=False):
        assert retention.purge(timedelta(days=7)).submissions == 1
        samples = scrape()
    assert value(samples, "gradequeue_lms_delivery_attempts_total", queue="test-123") == 1
    assert value(samples, "gradequeue_graded_to_delivered_seconds_count", queue="test-123") == 1
    assert value(samples, "gradequeue_submit_to_graded_seconds_sum", queue="test-123") == pytest.approx(10.0)
    assert value(samples, "gradequeue_submissions", queue="test-123", status="delivered") == 0


def test_a_purge_whose_events_are_counted_leaves_the_newer_events_to_the_roll_up(
    scripted_run: dict[str, int], queue: Queue, grader_user: Any
) -> None:
    from grading import retention
    from grading.models import MetricsWatermark

    # 100 s in: the re-leased submission's lease (from 71.5 s, 60 s long) has not run out yet.
    with time_machine.travel(T0 + timedelta(seconds=100), tick=False):
        scrape()  # every event so far is counted
        lease = lifecycle.lease_next(queue, grader_user)  # an event after the watermark, of a live submission
        assert lease is not None and lease.submission_id == scripted_run["waiting"]
        mark = MetricsWatermark.objects.get().last_event_id
        assert retention.purge(timedelta(seconds=60)).submissions == 1
        assert MetricsWatermark.objects.get().last_event_id == mark
        samples = scrape()
    assert value(samples, "gradequeue_submissions", queue="test-123", status="delivered") == 0
    assert value(samples, "gradequeue_submissions", queue="test-123", status="queued") == 0
    assert value(samples, "gradequeue_submissions", queue="test-123", status="pulled") == 2
    assert value(samples, "gradequeue_lms_delivery_attempts_total", queue="test-123") == 1


def test_purge_counts_a_passed_over_event_of_its_submissions_that_has_appeared_since(
    scripted_run: dict[str, int],
) -> None:
    from grading import retention
    from grading.models import MetricGap, MetricsWatermark, SubmissionEvent

    before = scrape()
    assert value(before, "gradequeue_lms_delivery_attempts_total", queue="test-123") == 1
    # A delivery attempt whose transaction was still open when a roll-up passed its id: below the watermark,
    # and listed as a gap to look for again.
    late = SubmissionEvent.objects.create(
        submission_id=scripted_run["delivered"],
        from_status="delivered",
        to_status="delivered",
        reason="delivery_retry",
        actor="system:delivery",
        created_at=T0,
    )
    MetricsWatermark.objects.update(last_event_id=late.pk)
    MetricGap.objects.create(event_id=late.pk, seen_at=T0 + timedelta(days=30))
    with time_machine.travel(T0 + timedelta(days=30), tick=False):
        assert retention.purge(timedelta(days=7)).submissions == 1
        samples = scrape()
    assert not MetricGap.objects.exists()
    assert value(samples, "gradequeue_lms_delivery_attempts_total", queue="test-123") == 2
    assert value(samples, "gradequeue_lms_delivery_failures_total", queue="test-123") == 1


def test_a_scrape_costs_the_same_queries_with_ten_times_the_rows_kept(
    queue: Queue, lms_user: Any, fake_lms: FakeLMS, django_assert_num_queries: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_of_a_scrape() -> int:
        scrape()  # rolls up what is new
        with CaptureQueriesContext(connection) as captured:
            scrape()
        return len(captured.captured_queries)

    for i in range(3):
        submit(queue, lms_user, fake_lms.callback_url(i, "a"))
    few = queries_of_a_scrape()
    for i in range(3, 30):
        submit(queue, lms_user, fake_lms.callback_url(i, "a"))
    assert queries_of_a_scrape() == few


def _event(pk: int, submission_id: int, reason: str, at: datetime) -> None:
    from grading.models import SubmissionEvent

    # A self-edge: only the reason's counter moves.
    SubmissionEvent.objects.create(
        pk=pk,
        submission_id=submission_id,
        from_status="queued",
        to_status="queued",
        reason=reason,
        actor="t",
        created_at=at,
    )


def test_an_event_whose_id_the_roll_up_passed_before_it_committed_is_counted_once_it_appears(
    queue: Queue, lms_user: Any, fake_lms: FakeLMS
) -> None:
    from grading import metrics
    from grading.models import MetricGap, SubmissionEvent

    with time_machine.travel(T0, tick=False):
        sub = submit(queue, lms_user, fake_lms.callback_url(1, "a"))
        base = SubmissionEvent.objects.order_by("-pk").values_list("pk", flat=True)[0] + 10
        metrics.rollup()
        # Ids base+1 and base+2 were handed out to transactions not yet committed; base+3's has committed.
        _event(base + 3, sub.pk, "lease_expired", T0)
        assert metrics.rollup() == 1
        assert sorted(MetricGap.objects.filter(event_id__gt=base).values_list("event_id", flat=True)) == [
            base + 1,
            base + 2,
        ]
        assert value(scrape(), "gradequeue_leases_expired_total", queue="test-123") == 1
        _event(base + 1, sub.pk, "lease_expired", T0)
        samples = scrape()
    assert value(samples, "gradequeue_leases_expired_total", queue="test-123") == 2
    assert list(MetricGap.objects.filter(event_id__gt=base).values_list("event_id", flat=True)) == [base + 2]
    # base+2 was rolled back: an hour later it is no longer looked for, and nothing counts twice.
    with time_machine.travel(T0 + metrics.GAP_HORIZON + timedelta(seconds=1), tick=False):
        samples = scrape()
    assert value(samples, "gradequeue_leases_expired_total", queue="test-123") == 2
    assert not MetricGap.objects.filter(event_id__gt=base).exists()


def test_ids_missing_between_old_events_are_not_looked_for(queue: Queue, lms_user: Any, fake_lms: FakeLMS) -> None:
    """Events purged before the counters existed leave holes in the ids; no transaction of theirs is open."""
    from grading import metrics
    from grading.models import MetricGap, SubmissionEvent

    with time_machine.travel(T0, tick=False):
        sub = submit(queue, lms_user, fake_lms.callback_url(1, "a"))
        base = SubmissionEvent.objects.order_by("-pk").values_list("pk", flat=True)[0] + 10
        metrics.rollup()
        _event(base + 50, sub.pk, "lease_expired", T0 - metrics.GAP_HORIZON - timedelta(seconds=1))
        assert metrics.rollup() == 1
    assert not MetricGap.objects.filter(event_id__gt=base - 10).exists()
    assert value(scrape(), "gradequeue_leases_expired_total", queue="test-123") == 1


@pytest.mark.django_db(transaction=True)
def test_another_process_reports_the_same_counters(scripted_run: dict[str, int]) -> None:
    import os
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    from tests.processes import database_url

    here = counter_values(scrape())
    code = "from grading import metrics; print(metrics.render()[0].decode())"
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        env={**os.environ, "DATABASE_URL": database_url(), "GRADEQUEUE_DEV": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    there = {}
    for family in text_string_to_metric_families(out):
        for s in family.samples:
            if s.name in COUNTERS:
                there[(s.name, s.labels["queue"])] = s.value
    assert there == here
    assert there[("gradequeue_lms_delivery_attempts_total", "other-queue")] == 2


def test_a_scrape_rolls_up_a_bounded_share_and_beat_the_rest(
    queue: Queue, lms_user: Any, fake_lms: FakeLMS, monkeypatch: Any
) -> None:
    from grading import metrics
    from grading.models import SubmissionEvent
    from tasks.ops import rollup_metrics

    monkeypatch.setattr(metrics, "SCRAPE_ROLLUP_EVENTS", 2)
    with time_machine.travel(T0, tick=False):
        sub = submit(queue, lms_user, fake_lms.callback_url(1, "a"))
        metrics.rollup()
        last = SubmissionEvent.objects.order_by("-pk").values_list("pk", flat=True)[0]
        for i in range(1, 6):
            _event(last + i, sub.pk, "lease_expired", T0)
        assert value(scrape(), "gradequeue_leases_expired_total", queue="test-123") == 2
        assert value(scrape(), "gradequeue_leases_expired_total", queue="test-123") == 4
        assert rollup_metrics() == 1
        assert value(scrape(), "gradequeue_leases_expired_total", queue="test-123") == 5
