"""What operators read about the queues: depth, age, failures, and depth over time.

One place computes these numbers for the ``queue_stats`` command, the status page and the Prometheus
metrics, so that the three always agree. Everything is read from the database at the moment it is asked
for: web and Celery processes come and go, and only the database knows the whole picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from grading.models import Queue, QueueSample, Status, Submission

# A submission "could not be graded" (and the student was or will be told so) when it carries a
# failure reason in one of these states. ``requeue_failed`` picks exactly these up; a requeue clears the
# reason, so they stop counting once they are back in the queue.
FAILED_STATES = (Status.FAILED, Status.DELIVERED, Status.DEAD_LETTER)


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
    """One row per queue (all queues, or those named), in name order; empty queues have zeros."""
    now = now or timezone.now()
    queues = Queue.objects.order_by("name")
    if names:
        queues = queues.filter(name__in=names)
    rows = {pk: QueueStats(name=name, queue_id=pk, now=now) for pk, name in queues.values_list("pk", "name")}
    if not rows:
        return []
    live = (
        Submission.objects.filter(queue_id__in=rows, status__in=(Status.QUEUED, Status.PULLED, Status.DEAD_LETTER))
        .values("queue_id", "status")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    )
    for item in live:
        stats = rows[item["queue_id"]]
        if item["status"] == Status.QUEUED:
            stats.waiting = item["n"]
            stats.oldest_waiting_at = item["oldest"]
        elif item["status"] == Status.PULLED:
            stats.leased = item["n"]
        else:
            stats.dead_letter = item["n"]
    for failed in failed_submissions().filter(queue_id__in=rows).values("queue_id").annotate(n=Count("id")):
        rows[failed["queue_id"]].failed = failed["n"]
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
