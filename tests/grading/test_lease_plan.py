"""On PostgreSQL the lease reads the waiting submissions' partial index, whatever the statistics say.

With statistics taken while every row was queued (a young table right after an exam's burst), a lease
written as "queue_id = X ORDER BY id" walked the primary key and read every submission already handed out
before finding a waiting one: each lease got slower as the backlog drained.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from grading import lifecycle
from grading.models import Status, Submission
from tests.conftest import submit

pytestmark = pytest.mark.django_db


def plan(sql: str, params: dict[str, Any]) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_lease_reads_the_waiting_index_even_when_statistics_say_everything_waits(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    ids = [submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{i}").pk for i in range(400)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE grading_submission")  # statistics: all 400 queued
    # Half of them handed out and graded since.
    Submission.objects.filter(pk__in=ids[:200]).update(status=Status.DELIVERED)
    # The parameters exactly as production binds them (the queue ids as array text, real times).
    now = timezone.now()
    params = lifecycle._pg_lease_params(
        queue.pk, "k" * 43, now + timedelta(seconds=300), grader_user.pk, now, "lease", "user:grader"
    )
    lease_plan = plan(lifecycle._PG_LEASE_SQL, params)
    assert "using sub_waiting on grading_submission" in lease_plan, lease_plan
    length_plan = plan(lifecycle._PG_BOUNDED_LENGTH_SQL, lifecycle._pg_bounded_length_params(queue.pk, 1))
    assert "using sub_waiting on grading_submission" in length_plan, length_plan
    # And it hands out the oldest waiting one.
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and lease.submission_id == ids[200]
    assert lifecycle.queue_length(queue.pk, limit=1) == 1
    assert lifecycle.queue_length(queue.pk) == 199
