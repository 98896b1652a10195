"""Prometheus metrics: gauges read from the live rows, counters and histograms rolled up from the event trail.

Why not counters incremented in code: gradequeue runs as several web workers and several Celery worker
processes, each of which would hold its own counters (and lose them on restart). Why not aggregates over
every kept row at each scrape (what this module did first): their cost grows with the rows kept, a million
submissions a semester, and ``purge_submissions`` made the counters go down.

So the database keeps the cumulative numbers (``MetricCounter``, one row per queue and name) and every
scrape, from any process, reads the same rows. They are rolled up from ``SubmissionEvent``, which every
transition appends in its own transaction: a roll-up adds the events with ids above the watermark
(``MetricsWatermark``) to the counters and moves the watermark, under that row's lock, in one transaction.
No transition writes a shared row (no hot counter on the lease path). A scrape rolls up what happened since
the last one (up to SCRAPE_ROLLUP_EVENTS), beat does it every 15 s, and ``purge_submissions`` does it in a
batch's transaction before it deletes whenever one of the batch's events is not counted yet, so nothing is lost
on restart or purge.

Event ids are handed out before their transaction commits, so a roll-up can pass an id whose transaction is
still open; such an id is kept in ``MetricGap`` and looked for again by later roll-ups, until it is
``GAP_HORIZON`` old (a transaction rolled back, or one open that long, is not counted).

The gauges (waiting, leased, failed, dead letters, oldest waiting) are ``grading.stats.queue_stats``, whose
queries walk the partial indexes of the live states only; the one part of them that grows with the history,
the failure notices already delivered, is a counter rolled up here (``notices_delivered``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import (
    BooleanField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from grading.models import MetricCounter, MetricGap, MetricsWatermark, Status, Submission, SubmissionEvent
from grading.stats import NOTICES_DELIVERED, queue_stats

# Seconds from submission to a grade (or a failure notice): graders take seconds to minutes, and a queue
# without graders during an exam shows up in the last buckets.
SUBMIT_TO_GRADED_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
# Seconds from the grade to its delivery: normally well under a second, minutes to hours when the LMS is
# down and delivery is backing off (up to the delivery horizon, 6 h by default).
GRADED_TO_DELIVERED_BUCKETS = (0.1, 0.5, 1, 2, 5, 15, 60, 300, 1800, 3600, 6 * 3600)
HISTOGRAMS = {"submit_to_graded": SUBMIT_TO_GRADED_BUCKETS, "graded_to_delivered": GRADED_TO_DELIVERED_BUCKETS}

# Event reasons that stand for one delivery attempt each, and those of them that failed.
# (delivery_error: the POST raised before any HTTP answer, and the grade was replaced by the notice.)
DELIVERY_ATTEMPT_REASONS = ("delivered", "delivery_retry", "delivery_failed", "delivery_error")
DELIVERY_FAILURE_REASONS = ("delivery_retry", "delivery_failed", "delivery_error")
# A grading round ends when a submission still being graded gets its grade or its failure notice.
GRADING_STATES = ("queued", "pulled", "returned")
GRADE_STATES = ("graded", "failed")

# How long a passed-over event id is looked for again. Transitions' transactions last milliseconds; one
# open for an hour has been stuck on a lock far longer than any request or task time limit.
GAP_HORIZON = timedelta(hours=1)
# More missing ids than this between two events is no set of open transactions (a sequence that jumped):
# only the highest are looked for.
MAX_GAPS_PER_HOLE = 1000
# Events per roll-up transaction; a scrape rolls up at most SCRAPE_ROLLUP_EVENTS (a few milliseconds) before
# it answers, and beat's roll-up every 15 s takes the rest.
ROLLUP_BATCH = 20000
SCRAPE_ROLLUP_EVENTS = 1000

Deltas = dict[tuple[int, str], float]


def _seconds(total: object) -> float:
    # A sum of durations: a timedelta on PostgreSQL, microseconds on SQLite and MySQL.
    return total.total_seconds() if isinstance(total, timedelta) else float(total or 0) / 1e6  # type: ignore[arg-type]


def _histogram_deltas(deltas: Deltas, events: QuerySet[SubmissionEvent], name: str, start: str, condition: Q) -> None:
    duration = ExpressionWrapper(F("created_at") - F(start), output_field=DurationField())
    buckets = HISTOGRAMS[name]
    per_bucket = {f"le_{i}": Count("id", filter=Q(d__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)}
    rows = (
        events.filter(condition)
        .annotate(d=duration)
        .values("submission__queue_id")
        .annotate(n=Count("id"), total=Sum("d"), **per_bucket)
    )
    for typed_row in rows:
        row: dict[str, Any] = dict(typed_row)  # the bucket keys are built at run time
        queue_id = row["submission__queue_id"]
        deltas[(queue_id, f"{name}:count")] += row["n"]
        deltas[(queue_id, f"{name}:sum")] += _seconds(row["total"])
        for i, bucket in enumerate(buckets):
            deltas[(queue_id, f"{name}:le:{float(bucket)}")] += row[f"le_{i}"]


def requeued_notices(events: QuerySet[SubmissionEvent]) -> QuerySet[SubmissionEvent]:
    """The requeues among ``events`` that took a delivered failure notice (not a delivered grade) back: the
    submission's last arrival in delivered before the requeue came from failed."""
    arrival = (
        SubmissionEvent.objects.filter(
            submission_id=OuterRef("submission_id"), pk__lt=OuterRef("pk"), to_status=Status.DELIVERED
        )
        .exclude(from_status=Status.DELIVERED)
        .order_by("-pk")
        .values("from_status")[:1]
    )
    requeues = events.filter(from_status=Status.DELIVERED, to_status=Status.QUEUED)
    return requeues.annotate(came_from=Subquery(arrival)).filter(came_from=Status.FAILED)


def _count(deltas: Deltas, events: QuerySet[SubmissionEvent]) -> None:
    """Add ``events`` to ``deltas``, aggregated by the database (a few rows per queue come back)."""
    for row in events.values("submission__queue_id", "from_status", "to_status", "reason").annotate(n=Count("id")):
        queue_id, n, reason = row["submission__queue_id"], row["n"], row["reason"]
        # Kept submissions by status: each transition moves one from its old status to its new one.
        deltas[(queue_id, f"status:{row['to_status']}")] += n
        if row["from_status"]:
            deltas[(queue_id, f"status:{row['from_status']}")] -= n
        if reason == "lease_expired":
            deltas[(queue_id, "leases_expired")] += n
        if reason in DELIVERY_ATTEMPT_REASONS:
            deltas[(queue_id, "delivery_attempts")] += n
            if reason in DELIVERY_FAILURE_REASONS:
                deltas[(queue_id, "delivery_failures")] += n
    # The delivered failure notices (queue_stats' "failed" past the live states): one arrives with each
    # failed -> delivered and leaves with its requeue (delivered -> queued, when it had arrived from failed),
    # or with its purge (before_purge).
    notices = events.filter(from_status=Status.FAILED, to_status=Status.DELIVERED)
    for arrived in notices.values("submission__queue_id").annotate(n=Count("id")).order_by():
        deltas[(arrived["submission__queue_id"], NOTICES_DELIVERED)] += arrived["n"]
    for requeued in requeued_notices(events).values("submission__queue_id").annotate(n=Count("id")).order_by():
        deltas[(requeued["submission__queue_id"], NOTICES_DELIVERED)] -= requeued["n"]
    # A grading round ends with a grade or a failure notice; each delivery ends a delivery.
    graded = Q(to_status__in=GRADE_STATES, from_status__in=GRADING_STATES)
    _histogram_deltas(deltas, events, "submit_to_graded", "submission__created_at", graded)
    delivered = Q(to_status=Status.DELIVERED, submission__graded_at__isnull=False)
    _histogram_deltas(deltas, events, "graded_to_delivered", "submission__graded_at", delivered)


def _apply(deltas: Deltas) -> None:
    deltas = {key: d for key, d in deltas.items() if d}
    if not deltas:
        return
    queue_ids = {q for q, _ in deltas}
    names = {n for _, n in deltas}
    current = {
        (q, n): v
        for q, n, v in MetricCounter.objects.filter(queue_id__in=queue_ids, name__in=names).values_list(
            "queue_id", "name", "value"
        )
    }
    rows = [MetricCounter(queue_id=q, name=n, value=current.get((q, n), 0.0) + d) for (q, n), d in deltas.items()]
    # The watermark's lock is held: nobody else writes these rows, so read-add-write is safe.
    target = ["queue", "name"] if connection.features.supports_update_conflicts_with_target else None
    MetricCounter.objects.bulk_create(rows, update_conflicts=True, unique_fields=target, update_fields=["value"])


def _lock(*, wait: bool) -> MetricsWatermark | None:
    """The watermark row, locked; None when another roll-up holds it and ``wait`` is false."""
    if not MetricsWatermark.objects.filter(pk=1).exists():
        try:
            with transaction.atomic():
                MetricsWatermark.objects.create(pk=1)
        except IntegrityError:
            pass  # created by a concurrent roll-up
    rows = MetricsWatermark.objects.filter(pk=1)
    return (rows.select_for_update() if wait else rows.select_for_update(skip_locked=True)).first()


def _rollup_batch(mark: MetricsWatermark, now: datetime, batch: int = ROLLUP_BATCH) -> int:
    """Add the next events after the watermark (and any passed-over ones that have appeared) to the counters.
    Runs in the caller's transaction, which holds the watermark's lock. Returns how many events it passed."""
    deltas: Deltas = defaultdict(float)
    gaps = list(MetricGap.objects.values_list("event_id", flat=True))
    if gaps:
        found = list(SubmissionEvent.objects.filter(pk__in=gaps).values_list("pk", flat=True))
        if found:
            _count(deltas, SubmissionEvent.objects.filter(pk__in=found))
            MetricGap.objects.filter(event_id__in=found).delete()
        MetricGap.objects.filter(seen_at__lt=now - GAP_HORIZON).delete()
    # The ids only (and whether each event is recent): the counting is the database's.
    recent = ExpressionWrapper(Q(created_at__gte=now - GAP_HORIZON), output_field=BooleanField())
    rows = list(
        SubmissionEvent.objects.filter(pk__gt=mark.last_event_id)
        .order_by("pk")
        .annotate(recent=recent)
        .values_list("pk", "recent")[:batch]
    )
    if rows:
        _count(deltas, SubmissionEvent.objects.filter(pk__gt=mark.last_event_id, pk__lte=rows[-1][0]))
    new_gaps: list[int] = []
    previous = mark.last_event_id
    for pk, is_recent in rows:
        # An id missing below this event's was handed out before it: only a recent event can have an
        # older neighbour whose transaction is still open.
        if pk > previous + 1 and is_recent:
            new_gaps.extend(range(max(previous + 1, pk - MAX_GAPS_PER_HOLE), pk))
        previous = pk
    MetricGap.objects.bulk_create([MetricGap(event_id=pk, seen_at=now) for pk in new_gaps], ignore_conflicts=True)
    _apply(deltas)
    if rows:
        mark.last_event_id = rows[-1][0]
    mark.rolled_up_at = now
    mark.save(update_fields=["last_event_id", "rolled_up_at"])
    return len(rows)


def rollup(*, batch: int = ROLLUP_BATCH, once: bool = False, now: datetime | None = None) -> int | None:
    """Roll the event trail up into the counters, ``batch`` events a transaction, until it is caught up (or
    after one batch, with ``once``).

    Returns how many events were added, or None when another process was rolling up (it does the work).
    """
    total = 0
    while True:
        with transaction.atomic():
            mark = _lock(wait=False)
            if mark is None:
                return None if total == 0 else total
            passed = _rollup_batch(mark, now or timezone.now(), batch)
        total += passed
        if passed < batch or once:
            return total


def before_purge(submission_ids: list[int]) -> None:
    """In the purge's transaction, before it deletes these submissions (locked) with their events: make sure
    every event of theirs is counted, then take the submissions out of the kept-by-status numbers.

    Their events are old, and normally counted long ago: then the roll-up (of everything since the watermark,
    in order) is left to beat and the scrapes, and a batch costs one look instead of a roll-up."""
    now = timezone.now()
    mark = _lock(wait=True)
    assert mark is not None
    theirs = SubmissionEvent.objects.filter(submission_id__in=submission_ids)
    while theirs.filter(Q(pk__gt=mark.last_event_id) | Q(pk__in=MetricGap.objects.values("event_id"))).exists():
        if _rollup_batch(mark, now) < ROLLUP_BATCH:
            break  # caught up, passed-over ids that have appeared included: all of theirs are counted
    deltas: Deltas = defaultdict(float)
    for row in Submission.objects.filter(pk__in=submission_ids).values("queue_id", "status").annotate(n=Count("id")):
        deltas[(row["queue_id"], f"status:{row['status']}")] -= row["n"]
    notices = Submission.objects.filter(pk__in=submission_ids, status=Status.DELIVERED).exclude(failure_reason="")
    for purged in notices.values("queue_id").annotate(n=Count("id")).order_by():
        deltas[(purged["queue_id"], NOTICES_DELIVERED)] -= purged["n"]
    _apply(deltas)


def counters() -> dict[int, dict[str, float]]:
    """Every queue's rolled-up numbers, by name."""
    values: dict[int, dict[str, float]] = defaultdict(dict)
    for queue_id, name, value in MetricCounter.objects.values_list("queue_id", "name", "value"):
        values[queue_id][name] = value
    return values


def _histogram(
    name: str, doc: str, buckets: tuple[float, ...], names: dict[int, str], values: dict[int, dict[str, float]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"gradequeue_{name}", doc, labels=["queue"], unit="seconds")
    for queue_id, queue_name in names.items():
        c = values.get(queue_id, {})
        cumulative = [(str(float(b)), c.get(f"{name}:le:{float(b)}", 0.0)) for b in buckets]
        family.add_metric([queue_name], [*cumulative, ("+Inf", c.get(f"{name}:count", 0.0))], c.get(f"{name}:sum", 0.0))
    return family


class QueueCollector(Collector):
    """Collects every gradequeue metric, per queue, from the database."""

    def collect(self) -> Iterator[Metric]:
        stats = queue_stats()
        names = {s.queue_id: s.name for s in stats}

        gauges = {
            "waiting": GaugeMetricFamily(
                "gradequeue_queue_waiting", "Submissions waiting to be handed to a grader.", labels=["queue"]
            ),
            "leased": GaugeMetricFamily(
                "gradequeue_queue_leased", "Submissions leased to a grader, result not yet back.", labels=["queue"]
            ),
            "failed": GaugeMetricFamily(
                "gradequeue_queue_failed",
                "Submissions that could not be graded and were not requeued (requeue_failed picks them up).",
                labels=["queue"],
            ),
            "dead_letter": GaugeMetricFamily(
                "gradequeue_queue_dead_letter",
                "Grades whose delivery to the LMS gave up (redeliver them from the admin).",
                labels=["queue"],
            ),
        }
        oldest = GaugeMetricFamily(
            "gradequeue_queue_oldest_waiting_age_seconds",
            "Age of the oldest waiting submission; 0 when none waits.",
            labels=["queue"],
        )
        for s in stats:
            for attr, family in gauges.items():
                family.add_metric([s.name], getattr(s, attr))
            oldest.add_metric([s.name], s.oldest_age_seconds or 0.0)
        yield from gauges.values()
        yield oldest

        # queue_stats has rolled up what happened since the last scrape, so the counters below are as recent;
        # when another process is rolling up, they are read as that process last committed them.
        values = counters()

        expired = CounterMetricFamily(
            "gradequeue_leases_expired", "Leases that expired without a result.", labels=["queue"]
        )
        attempts = CounterMetricFamily(
            "gradequeue_lms_delivery_attempts", "Attempts to post a grade to the LMS.", labels=["queue"]
        )
        failures = CounterMetricFamily(
            "gradequeue_lms_delivery_failures",
            "Attempts to post a grade to the LMS that did not get HTTP 200.",
            labels=["queue"],
        )
        submissions = GaugeMetricFamily(
            "gradequeue_submissions", "Submissions kept, by current status.", labels=["queue", "status"]
        )
        for queue_id, name in names.items():
            c = values.get(queue_id, {})
            expired.add_metric([name], c.get("leases_expired", 0.0))
            attempts.add_metric([name], c.get("delivery_attempts", 0.0))
            failures.add_metric([name], c.get("delivery_failures", 0.0))
            for status in Status.values:
                submissions.add_metric([name, status], c.get(f"status:{status}", 0.0))
        yield expired
        yield attempts
        yield failures
        yield submissions

        yield _histogram(
            "submit_to_graded",
            "Seconds from submission to its grade (or failure notice), once per grading round.",
            SUBMIT_TO_GRADED_BUCKETS,
            names,
            values,
        )
        yield _histogram(
            "graded_to_delivered",
            "Seconds from the grade to its delivery to the LMS.",
            GRADED_TO_DELIVERED_BUCKETS,
            names,
            values,
        )


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics and their content type, in the format the scraper's Accept header asks for.

    A registry of our own, not the process-global one: the global registry's process metrics describe
    whichever web worker answered the scrape, which says nothing about the service.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
