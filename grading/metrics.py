"""Prometheus metrics, computed from the database at scrape time.

Why a custom collector rather than counters incremented in code: gradequeue runs as several web
workers and several Celery worker processes, each of which would hold its own counters (and lose them on
restart). The database already records every transition as a ``SubmissionEvent`` and every timestamp on
the ``Submission``, so one scrape of any web process reads the same, complete numbers. Counters and
histograms are cumulative over the rows kept; ``purge_submissions`` removing rows shows as a counter reset, which
``rate()`` and ``increase()`` handle.

The queries are a handful of grouped aggregates; their cost grows with the rows kept, which is one reason
to purge finished submissions after a while.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from grading.models import Status, Submission, SubmissionEvent
from grading.stats import queue_stats

# Seconds from submission to a grade (or a failure notice): graders take seconds to minutes, and a queue
# without graders during an exam shows up in the last buckets.
SUBMIT_TO_GRADED_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
# Seconds from the grade to its delivery: normally well under a second, minutes to hours when the LMS is
# down and delivery is backing off (up to the delivery horizon, 6 h by default).
GRADED_TO_DELIVERED_BUCKETS = (0.1, 0.5, 1, 2, 5, 15, 60, 300, 1800, 3600, 6 * 3600)

# Event reasons that stand for one delivery attempt each, and those of them that failed.
# (delivery_error: the POST raised before any HTTP answer, and the grade was replaced by the notice.)
DELIVERY_ATTEMPT_REASONS = ("delivered", "delivery_retry", "delivery_failed", "delivery_error")
DELIVERY_FAILURE_REASONS = ("delivery_retry", "delivery_failed", "delivery_error")
COUNTED_REASONS = (*DELIVERY_ATTEMPT_REASONS, "lease_expired")


def _histogram(
    name: str, doc: str, start: str, end: str, buckets: tuple[float, ...], names: dict[int, str]
) -> HistogramMetricFamily:
    duration = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    aggregates = {f"le_{i}": Count("id", filter=Q(d__lte=timedelta(seconds=b))) for i, b in enumerate(buckets)}
    rows = (
        Submission.objects.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
        .annotate(d=duration)
        .values("queue_id")
        .annotate(n=Count("id"), total=Sum("d"), **aggregates)
    )
    family = HistogramMetricFamily(name, doc, labels=["queue"], unit="seconds")
    seen = set()
    for typed_row in rows:
        row: dict[str, Any] = dict(typed_row)  # the bucket keys are built at run time
        total = row["total"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else float(total or 0) / 1e6
        cumulative = [(str(float(b)), row[f"le_{i}"]) for i, b in enumerate(buckets)]
        family.add_metric([names[row["queue_id"]]], [*cumulative, ("+Inf", row["n"])], seconds)
        seen.add(row["queue_id"])
    for queue_id, queue_name in names.items():
        if queue_id not in seen:
            family.add_metric([queue_name], [*((str(float(b)), 0) for b in buckets), ("+Inf", 0)], 0.0)
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

        counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in (
            SubmissionEvent.objects.filter(reason__in=COUNTED_REASONS)
            .values("submission__queue_id", "reason")
            .annotate(n=Count("id"))
        ):
            counts[row["submission__queue_id"]][row["reason"]] += row["n"]
        by_status: dict[int, dict[str, int]] = defaultdict(dict)
        for status_row in Submission.objects.values("queue_id", "status").annotate(n=Count("id")):
            by_status[status_row["queue_id"]][status_row["status"]] = status_row["n"]

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
            c = counts.get(queue_id, {})
            expired.add_metric([name], c.get("lease_expired", 0))
            attempts.add_metric([name], sum(c.get(r, 0) for r in DELIVERY_ATTEMPT_REASONS))
            failures.add_metric([name], sum(c.get(r, 0) for r in DELIVERY_FAILURE_REASONS))
            for status in Status.values:
                submissions.add_metric([name, status], by_status[queue_id].get(status, 0))
        yield expired
        yield attempts
        yield failures
        yield submissions

        yield _histogram(
            "gradequeue_submit_to_graded",
            "Seconds from submission to its grade (or failure notice).",
            "created_at",
            "graded_at",
            SUBMIT_TO_GRADED_BUCKETS,
            names,
        )
        yield _histogram(
            "gradequeue_graded_to_delivered",
            "Seconds from the grade to its delivery to the LMS.",
            "graded_at",
            "delivered_at",
            GRADED_TO_DELIVERED_BUCKETS,
            names,
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
