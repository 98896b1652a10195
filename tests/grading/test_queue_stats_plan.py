"""On PostgreSQL queue_stats reads the live states' partial indexes alone, never the semester's rows.

With most rows delivered (grades and failure notices) and the live ones scattered among them, counting the
waiting, leased and dead-lettered submissions through sub_status_updated read one table page per live row
(1 557 buffers at 1 M kept against 181 at 10 k), and counting the failures read every delivered notice's
index entry. Each of queue_stats' statements on the submissions must now be an index-only scan of
sub_live, sub_leased or sub_failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from grading.models import Status, Submission
from grading.stats import queue_stats

pytestmark = pytest.mark.django_db


# VACUUM runs outside a transaction; it also sets the visibility map, as autovacuum keeps it on a real table. With
# the map empty (ANALYZE alone) an index-only scan costs a table visit per row, and which index PostgreSQL picks
# for ten rows then depends on how large earlier tests left each index.
@pytest.mark.django_db(transaction=True)
def test_queue_stats_reads_only_the_live_states_indexes(queue: Any, lms_user: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    now = timezone.now()
    kinds = (
        [(Status.DELIVERED, "")] * 3000
        + [(Status.DELIVERED, "the grader reply is not JSON")] * 300
        + [(Status.QUEUED, ""), (Status.PULLED, ""), (Status.DEAD_LETTER, "lost"), (Status.FAILED, "bad")] * 5
    )
    Submission.objects.bulk_create(
        Submission(
            queue=queue,
            status=status,
            failure_reason=reason,
            lms_header="{}",
            lms_callback_url=f"http://x/{i}",
            callback_hash=f"{i:064d}",
            created_at=now - timedelta(seconds=len(kinds) - i),
            updated_at=now,
            lease_expires_at=now + timedelta(minutes=5) if status == Status.PULLED else None,
        )
        for i, (status, reason) in enumerate(kinds)
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE grading_submission")
    with CaptureQueriesContext(connection) as captured:
        row = queue_stats([queue.name])[0]
    assert (row.waiting, row.leased, row.dead_letter, row.failed) == (5, 5, 5, 10)
    plans = []
    for query in captured.captured_queries:
        if "grading_submission" in query["sql"] and "grading_submissionevent" not in query["sql"]:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + query["sql"])
                plans.append("\n".join(r[0] for r in cursor.fetchall()))
    assert len(plans) == 3, plans
    waiting, leased, failed = plans
    assert "Index Only Scan using sub_live on grading_submission" in waiting, waiting
    assert "Index Only Scan using sub_leased on grading_submission" in leased, leased
    assert "Index Only Scan using sub_failed on grading_submission" in failed, failed
    for plan in plans:
        assert "Seq Scan" not in plan and "sub_status_updated" not in plan, plan
