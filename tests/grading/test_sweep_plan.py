"""On PostgreSQL the follow-up sweep is planned at each run, not prepared.

Prepared after five runs on a connection (beat's keeps its connection), PostgreSQL settled on a generic plan
for the delivery look-up ("graded or failed, due"), whose statuses it does not know: a scan of the whole
table, 1-2 s a sweep with 1 M submissions kept, against 0.1 ms for the plan made for its statuses.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from grading import lifecycle
from grading.models import Status, Submission

pytestmark = pytest.mark.django_db


def rows_read() -> int:
    # This transaction's own counters: the rows scans and index scans read from the table so far.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'grading_submission'"
        )
        return int(cursor.fetchone()[0])


def test_the_sweep_reads_indexes_however_often_a_connection_runs_it(queue: Any, lms_user: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    now = timezone.now()
    # Grades and notices waiting for a delivery retry an hour away (an LMS outage), among many delivered.
    statuses = [Status.DELIVERED] * 30_000 + [Status.GRADED, Status.FAILED] * 1500 + [Status.QUEUED] * 20
    Submission.objects.bulk_create(
        (
            Submission(
                queue=queue,
                status=status,
                lms_header="{}",
                lms_callback_url=f"http://x/{i}",
                callback_hash=f"{i:064d}",
                created_at=now,
                updated_at=now,
                next_delivery_at=now + timedelta(hours=1) if status in (Status.GRADED, Status.FAILED) else None,
            )
            for i, status in enumerate(statuses)
        ),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE grading_submission")
    read = []
    for _ in range(15):
        before = rows_read()
        assert lifecycle.sweep_followups(now=now) == {"score": 0, "deliver": 0, "dispatch": 0}
        read.append(rows_read() - before)
    # The graded and failed ones (not yet due) and the waiting ones, at most: never the delivered.
    assert max(read) <= 3020, read
