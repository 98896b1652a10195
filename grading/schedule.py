"""The periodic tasks, defined in code and synced into django-celery-beat by ``manage.py sync_schedule``."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from grading import publish


@dataclass(frozen=True)
class Periodic:
    name: str
    task: str
    every_seconds: int
    why: str


SCHEDULE = [
    # Leases are minutes long; checking every 15 s returns an expired one to its queue within 15 s of
    # expiry, for one indexed query when nothing has expired.
    Periodic(
        "gradequeue: reclaim expired leases",
        publish.RECLAIM_TASK,
        15,
        "return expired leases to their queue promptly",
    ),
    # Lost task messages are rare (broker down at commit, worker killed); a minute's delay to recover one
    # is fine, and the sweep's queries are cheap index scans.
    Periodic(
        "gradequeue: sweep lost follow-ups",
        publish.SWEEP_TASK,
        30,
        "re-enqueue scoring and delivery whose message never ran",
    ),
    # The status page charts each queue's depth over the last hour: a point every 30 s draws a queue
    # filling up during an exam clearly, for one small row per queue per sample.
    Periodic(
        "gradequeue: sample queue depth",
        publish.SAMPLE_DEPTH_TASK,
        30,
        "record queue depth for the status page's chart",
    ),
    # The metrics' counters lag the event trail by at most this (a scrape adds up to 1 000 events of its
    # own, so that its answer stays fast whatever the grading rate): Prometheus scrapes every 15-30 s.
    Periodic(
        "gradequeue: roll up metrics",
        publish.ROLLUP_METRICS_TASK,
        15,
        "add new events to the metrics' counters",
    ),
]

PREFIX = "gradequeue: "


def sync() -> dict[str, int]:
    """Create or update our periodic tasks, and disable ones we defined before but no longer do."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    counts = {"created": 0, "updated": 0, "disabled": 0}
    with transaction.atomic():
        for item in SCHEDULE:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=item.every_seconds, period=IntervalSchedule.SECONDS
            )
            task, created = PeriodicTask.objects.get_or_create(
                name=item.name, defaults={"task": item.task, "interval": interval, "description": item.why}
            )
            if created:
                counts["created"] += 1
                continue
            changed = (task.task, task.interval_id, task.enabled, task.description) != (
                item.task,
                interval.pk,
                True,
                item.why,
            )
            if changed:
                task.task, task.interval, task.enabled, task.description = item.task, interval, True, item.why
                task.save()
                counts["updated"] += 1
        known = {item.name for item in SCHEDULE}
        for task in PeriodicTask.objects.filter(name__startswith=PREFIX, enabled=True).exclude(name__in=known):
            task.enabled = False
            task.save()
            counts["disabled"] += 1
    return counts
