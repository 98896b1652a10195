"""Deleting old, finished submissions together with their stored files.

Only submissions that owe nobody anything are purged: ``delivered`` (the LMS has the grade), ``superseded``
(a newer answer replaced it) and ``cancelled``. A ``dead_letter`` submission holds a grade the LMS never
received and an operator may still redeliver, so it is purged only when asked for explicitly. Age counts
from the submission's last change (``updated_at``), i.e. from when it finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from grading import files, metrics
from grading.models import Status, Submission

FINISHED = (Status.DELIVERED, Status.SUPERSEDED, Status.CANCELLED)


@dataclass
class PurgeReport:
    submissions: int = 0
    files: int = 0
    # Submissions kept because a stored file could not be deleted (the next run tries again).
    kept: list[int] = field(default_factory=list)


def purgeable(older_than: timedelta, *, include_dead_letter: bool = False, now: datetime | None = None):  # type: ignore[no-untyped-def]
    statuses = [*FINISHED, Status.DEAD_LETTER] if include_dead_letter else list(FINISHED)
    cutoff = (now or timezone.now()) - older_than
    return Submission.objects.filter(status__in=statuses, updated_at__lt=cutoff)


def purge(
    older_than: timedelta,
    *,
    batch: int = 500,
    include_dead_letter: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete finished submissions older than ``older_than``, their events and their stored files.

    Works in transactions of ``batch`` rows. Within one, the rows are locked (so a concurrent requeue
    either happens first, and the row is no longer finished, or waits and finds it gone), their files
    are deleted, then the rows. A file that cannot be deleted keeps its row, so that no file outlives the
    record that points at it.
    """
    now = now or timezone.now()
    report = PurgeReport()
    if dry_run:
        for (stored,) in (
            purgeable(older_than, include_dead_letter=include_dead_letter, now=now).values_list("files").iterator()
        ):
            report.submissions += 1
            report.files += len(stored or {})
        return report
    while True:
        with transaction.atomic():
            rows = list(
                purgeable(older_than, include_dead_letter=include_dead_letter, now=now)
                .exclude(pk__in=report.kept)
                .order_by("pk")
                .select_for_update()
                .values_list("pk", "files")[:batch]
            )
            if not rows:
                return report
            doomed = []
            for pk, stored in rows:
                paths = list((stored or {}).values())
                if files.delete(paths):
                    report.kept.append(pk)
                    continue
                doomed.append(pk)
                report.files += len(paths)
            if doomed:
                # Their events are counted before they go, and they leave the kept-by-status gauge.
                metrics.before_purge(doomed)
            report.submissions += Submission.objects.filter(pk__in=doomed).delete()[1].get(Submission._meta.label, 0)
