"""Deleting old, finished submissions together with their stored files.

Only submissions that owe nobody anything are purged: ``delivered`` (the LMS has the grade), ``superseded``
(a newer answer replaced it) and ``cancelled``. A ``dead_letter`` submission holds a grade the LMS never
received and an operator may still redeliver, so it is purged only when asked for explicitly. Age counts
from the submission's last change (``updated_at``), i.e. from when it finished.

A purge walks the submissions in the order of their ids, one short transaction per batch: it locks the next
batch of purgeable rows (skipping any row another transaction holds, such as an operator's requeue: the next
run takes it), deletes their stored files, then deletes what points at them and the rows themselves with
set-based statements (``DELETE ... WHERE submission_id IN (...)``). Nothing is loaded whole, and no lock is
taken on a row that is not finished, so graders pulling and returning beside it never wait on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from grading import files, metrics
from grading.models import Status, Submission, SubmissionEvent, XqueueImport

FINISHED = (Status.DELIVERED, Status.SUPERSEDED, Status.CANCELLED)


@dataclass
class PurgeReport:
    submissions: int = 0
    files: int = 0
    # Rows deleted with the submissions: their events and their import records.
    events: int = 0
    imports: int = 0
    # Submissions kept because a stored file could not be deleted (the next run tries again).
    kept: list[int] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0


def purgeable(
    older_than: timedelta, *, include_dead_letter: bool = False, now: datetime | None = None
) -> QuerySet[Submission]:
    statuses = [*FINISHED, Status.DEAD_LETTER] if include_dead_letter else list(FINISHED)
    cutoff = (now or timezone.now()) - older_than
    return Submission.objects.filter(status__in=statuses, updated_at__lt=cutoff)


def _stored_paths(stored: Any) -> list[str]:
    # ``files`` is always {name: path} as gradequeue writes it; anything else names no file it could delete.
    if not isinstance(stored, dict):
        return []
    return [path for path in stored.values() if isinstance(path, str) and path]


def _delete_rows(submission_ids: list[int], report: PurgeReport) -> None:
    """Delete these submissions (locked by the caller's transaction) and every row that points at them.

    Set-based, children first: MySQL checks foreign keys at each statement, PostgreSQL and SQLite at commit.
    ``_raw_delete`` is Django's own fast path (one ``DELETE ... WHERE``), the one its deletion collector takes
    for rows nothing else points at; the collector itself would load every submission whole first.
    """
    events = SubmissionEvent.objects.filter(submission_id__in=submission_ids)
    report.events += events._raw_delete(events.db)
    imports = XqueueImport.objects.filter(submission_id__in=submission_ids)
    report.imports += imports._raw_delete(imports.db)
    # A submission kept that names a purged one as its replacement forgets it (the model's SET_NULL).
    Submission.objects.filter(superseded_by_id__in=submission_ids).exclude(pk__in=submission_ids).update(
        superseded_by=None
    )
    doomed = Submission.objects.filter(pk__in=submission_ids)
    report.submissions += doomed._raw_delete(doomed.db)


def purge(
    older_than: timedelta,
    *,
    batch: int = 500,
    include_dead_letter: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    max_rate: float | None = None,
    pause: float = 0.0,
    progress: Callable[[PurgeReport], None] | None = None,
) -> PurgeReport:
    """Delete finished submissions older than ``older_than``, their events and their stored files.

    Works in transactions of ``batch`` submissions, in the order of their ids. Within one, the rows are
    locked (a concurrent requeue either happened first, and the row is no longer finished, or holds its row
    and the purge passes it by), their files are deleted, the events are rolled up into the metrics'
    counters, then the rows go. A file that cannot be deleted keeps its row, so that no file outlives the
    record that points at it; the rows after it are purged all the same.

    ``max_rate`` (submissions per second) and ``pause`` (seconds after each batch) slow the purge down
    between transactions, for a purge beside graders at work. ``progress`` is called after each batch.
    """
    now = now or timezone.now()
    started = time.monotonic()
    report = PurgeReport()
    rows = purgeable(older_than, include_dead_letter=include_dead_letter, now=now)
    if dry_run:
        for (stored,) in rows.values_list("files").iterator(chunk_size=2000):
            report.submissions += 1
            report.files += len(_stored_paths(stored))
        report.seconds = time.monotonic() - started
        return report
    after = 0
    while True:
        with transaction.atomic():
            locked = list(
                rows.filter(pk__gt=after)
                .order_by("pk")
                .select_for_update(skip_locked=True)
                .values_list("pk", "files")[:batch]
            )
            if not locked:
                break
            after = locked[-1][0]
            doomed = []
            for pk, stored in locked:
                paths = _stored_paths(stored)
                if files.delete(paths):
                    report.kept.append(pk)
                    continue
                doomed.append(pk)
                report.files += len(paths)
            if doomed:
                # Their events are counted before they go, and they leave the kept-by-status gauge.
                metrics.before_purge(doomed)
                _delete_rows(doomed, report)
        report.batches += 1
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(report)
        if len(locked) < batch:
            break  # nothing purgeable after these, but rows another transaction held (the next run takes them)
        wait = pause
        if max_rate:
            wait = max(wait, report.submissions / max_rate - (time.monotonic() - started))
        if wait > 0:
            time.sleep(wait)
    report.seconds = time.monotonic() - started
    return report
