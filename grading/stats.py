"""What operators read about the queues: depth, age, failures, and depth over time.

One place computes these numbers for the ``queue_stats`` command, the status page and the Prometheus
metrics, so that the three always agree. Everything is read from the database at the moment it is asked
for: web and Celery processes come and go, and only the database knows the whole picture. The failure
notices already delivered are read from the metrics' rolled-up counters, as of the roll-up each read does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from grading.models import MetricCounter, Queue, QueueSample, Status, Submission

# A submission "could not be graded" (and the student was or will be told so) when it carries a
# failure reason in one of these states. ``requeue_failed`` picks exactly these up; a requeue clears the
# reason, so they stop counting once they are back in the queue.
FAILED_STATES = (Status.FAILED, Status.DELIVERED, Status.DEAD_LETTER)


# Waiting and dead letters, counted through the partial index sub_live, and the leases through sub_leased:
# the same rows whatever the history kept.
LIVE_STATES = (Status.QUEUED, Status.DEAD_LETTER)
# The failure notices already delivered: the part of "could not be graded" that stays for the rest of the
# semester. It is a counter rolled up from the event trail (grading.metrics), not a count over the rows.
NOTICES_DELIVERED = "notices_delivered"


def failed_submissions() -> QuerySet[Submission]:
    """Submissions that could not be graded and have not been requeued, superseded or cancelled since."""
    return Submission.objects.filter(status__in=FAILED_STATES).exclude(failure_reason="")


@dataclass
class QueueStats:
    name: str
    queue_id: int
    waiting: int = 0
    leased: int = 0
    failed: int = 0
    dead_letter: int = 0
    oldest_waiting_at: datetime | None = None
    now: datetime = field(default_factory=timezone.now)

    @property
    def oldest_age_seconds(self) -> float | None:
        if self.oldest_waiting_at is None:
            return None
        return max(0.0, (self.now - self.oldest_waiting_at).total_seconds())


def queue_stats(names: list[str] | None = None, *, now: datetime | None = None) -> list[QueueStats]:
    """One row per queue (all queues, or those named), in name order; empty queues have zeros.

    What it reads is the same at any size: the live states through their partial indexes, and the delivered
    failure notices from the metrics' counters, after rolling up what happened since the last roll-up (up to
    a scrape's share; beat rolls up the rest every 15 s)."""
    from grading import metrics  # metrics reads its gauges from here

    metrics.rollup(batch=metrics.SCRAPE_ROLLUP_EVENTS, once=True)
    now = now or timezone.now()
    queues = Queue.objects.order_by("name")
    if names:
        queues = queues.filter(name__in=names)
    rows = {pk: QueueStats(name=name, queue_id=pk, now=now) for pk, name in queues.values_list("pk", "name")}
    if not rows:
        return []
    # Count("*"), not of the id: the id is not in sub_live, and PostgreSQL would read the table for it.
    live = (
        Submission.objects.filter(queue_id__in=rows, status__in=LIVE_STATES)
        .values("queue_id", "status")
        .annotate(n=Count("*"), oldest=Min("created_at"))
        .order_by()
    )
    for item in live:
        stats = rows[item["queue_id"]]
        if item["status"] == Status.QUEUED:
            stats.waiting = item["n"]
            stats.oldest_waiting_at = item["oldest"]
        else:
            stats.dead_letter = item["n"]
    leased = Submission.objects.filter(queue_id__in=rows, status=Status.PULLED)
    for lease in leased.values("queue_id").annotate(n=Count("*")).order_by():
        rows[lease["queue_id"]].leased = lease["n"]
    # Could not be graded: those still failed or dead-lettered (sub_failed's entries by queue and status),
    # and the notices already delivered (rolled up: one per failed -> delivered, less requeues and purges).
    pending = failed_submissions().filter(queue_id__in=rows, status__in=(Status.FAILED, Status.DEAD_LETTER))
    for failed in pending.values("queue_id").annotate(n=Count("*")).order_by():
        rows[failed["queue_id"]].failed += failed["n"]
    notices = MetricCounter.objects.filter(queue_id__in=rows, name=NOTICES_DELIVERED)
    for queue_id, value in notices.values_list("queue_id", "value"):
        rows[queue_id].failed += int(value)
    return list(rows.values())


def format_age(seconds: float | None) -> str:
    """A short human duration: ``-`` for none, else like ``45s``, ``12m05s``, ``3h20m``, ``2d04h``."""
    if seconds is None:
        return "-"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


# --- Depth over time ---------------------------------------------------------------------------------


def take_samples(*, now: datetime | None = None) -> int:
    """Record every queue's current depth (waiting, leased) and forget samples past the retention.

    Run by beat (grading/schedule.py); the status page draws its chart from these rows.
    """
    from grading.conf import setting

    now = now or timezone.now()
    samples = [
        QueueSample(queue_id=s.queue_id, taken_at=now, waiting=s.waiting, leased=s.leased) for s in queue_stats(now=now)
    ]
    QueueSample.objects.bulk_create(samples)
    keep = timedelta(seconds=float(setting("SAMPLE_RETENTION_SECONDS")))
    QueueSample.objects.filter(taken_at__lt=now - keep).delete()
    return len(samples)


@dataclass(frozen=True)
class DepthPoint:
    at: datetime
    waiting: int
    leased: int


def depth_history(queue_ids: list[int], *, since: datetime, now: datetime | None = None) -> dict[int, list[DepthPoint]]:
    """The recorded depth of each queue since ``since``, oldest first."""
    history: dict[int, list[DepthPoint]] = {pk: [] for pk in queue_ids}
    rows = (
        QueueSample.objects.filter(queue_id__in=queue_ids, taken_at__gte=since)
        .filter(Q(taken_at__lte=now) if now else Q())
        .order_by("taken_at", "id")
        .values_list("queue_id", "taken_at", "waiting", "leased")
    )
    for queue_id, at, waiting, leased in rows:
        history[queue_id].append(DepthPoint(at, waiting, leased))
    return history
