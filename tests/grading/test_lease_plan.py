"""On PostgreSQL the lease reads the waiting submissions' partial index, whatever the statistics say.

With statistics taken while every row was queued (a young table right after an exam's burst), a lease
written as "queue_id = X ORDER BY id" walked the primary key and read every submission already handed out
before finding a waiting one: each lease got slower as the backlog drained.
"""

from __future__ import annotations

import json
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
        queue.pk, "k" * 43, now + timedelta(seconds=300), grader_user.pk, now, "lease", "user:grader", 3
    )
    lease_plan = plan(lifecycle._PG_LEASE_SQL, params)
    assert "using sub_waiting on grading_submission" in lease_plan, lease_plan
    length_plan = plan(lifecycle._PG_BOUNDED_LENGTH_SQL, lifecycle._pg_length_params(queue.pk, 1, now))
    assert "using sub_waiting on grading_submission" in length_plan, length_plan
    # And it hands out the oldest waiting one.
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and lease.submission_id == ids[200]
    assert lifecycle.queue_length(queue.pk, limit=1) == 1
    assert lifecycle.queue_length(queue.pk) == 199


def test_the_expired_lease_probe_reads_the_leased_index_once_statistics_have_seen_a_lease(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    """The probe for expired leases reads sub_leased: the leases that have run out are its entries up to now.

    (With statistics taken before any lease, PostgreSQL's estimate for the one-page, empty partial index is
    higher than for sub_status_updated's "pulled" range, and it reads that instead: the leases in flight, not
    the backlog, until the next analyze.)
    """
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    ids = [submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{i}").pk for i in range(400)]
    Submission.objects.filter(pk__in=ids[:200]).update(status=Status.DELIVERED)
    leases = [lifecycle.lease_next(queue, grader_user) for _ in range(8)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE grading_submission")  # statistics: 200 delivered, 8 leased, 192 queued
    now = timezone.now()
    params = lifecycle._pg_lease_params(
        queue.pk, "k" * 43, now + timedelta(seconds=300), grader_user.pk, now, "lease", "user:grader", 3
    )
    lease_plan = plan(lifecycle._PG_LEASE_SQL, params)
    assert "using sub_leased on grading_submission" in lease_plan, lease_plan
    assert "using sub_waiting on grading_submission" in lease_plan, lease_plan
    length_plan = plan(lifecycle._PG_BOUNDED_LENGTH_SQL, lifecycle._pg_length_params(queue.pk, 1, now))
    assert "using sub_leased on grading_submission" in length_plan, length_plan
    assert "using sub_waiting on grading_submission" in length_plan, length_plan
    # The whole length (get_queuelen) counts the expired leases through sub_leased too.
    whole_plan = plan(lifecycle._PG_LENGTH_SQL, lifecycle._pg_length_params(queue.pk, None, now))
    assert "using sub_leased on grading_submission" in whole_plan, whole_plan
    # And the expired one is taken over first.
    assert leases[3] is not None
    # As if leased 300 s ago: its lease ends now.
    Submission.objects.filter(pk=leases[3].submission_id).update(
        updated_at=now - timedelta(seconds=300), lease_expires_at=now
    )
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and (lease.submission_id, lease.attempt) == (ids[203], 2)


# ANALYZE TABLE commits on MySQL: this test cannot live inside a transaction that is rolled back.
@pytest.mark.django_db(transaction=True)
def test_on_mysql_a_lease_claims_through_the_waiting_index_migration_0010_made(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    if connection.vendor != "mysql":
        pytest.skip("this plan is MySQL's and MariaDB's (PostgreSQL's is above; SQLite has no row locks)")
    from django.test.utils import CaptureQueriesContext

    ids = [submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{i}").pk for i in range(400)]
    Submission.objects.filter(pk__in=ids[:200]).update(status=Status.DELIVERED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE grading_submission")
    with CaptureQueriesContext(connection) as captured:
        lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and lease.submission_id == ids[200]
    # The claim exactly as production sent it (mysqlclient reports the statement with its parameters bound).
    (claim,) = [q["sql"] for q in captured.captured_queries if "FOR UPDATE SKIP LOCKED" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN FORMAT=JSON " + claim.replace("%", "%%"))
        explained = cursor.fetchone()[0]
    block = json.loads(explained)["query_block"]
    table = block["table"] if "table" in block else block["nested_loop"][0]["table"]
    assert (table["table_name"], table["key"], table["used_key_parts"]) == (
        "grading_submission",
        "sub_waiting",
        ["queue_id", "status"],
    ), explained
    assert "filesort" not in explained, explained  # the index gives the order: the first entry is the oldest
    # The expired probe (which runs first) reads sub_leased's range of leases run out by now.
    (probe,) = [q["sql"] for q in captured.captured_queries if "FORCE INDEX (sub_leased)" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN FORMAT=JSON " + probe.replace("%", "%%"))
        explained = cursor.fetchone()[0]
    block = json.loads(explained)["query_block"]
    table = block["table"] if "table" in block else block["nested_loop"][0]["table"]
    assert (table["table_name"], table["key"], table["access_type"]) == (
        "grading_submission",
        "sub_leased",
        "range",
    ), explained
    assert "filesort" not in explained, explained
    if connection.mysql_is_mariadb:
        # Run for real: one row read, the oldest waiting one, not the 200 handed out before it.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE FORMAT=JSON " + claim.replace("%", "%%"))
            analyzed = json.loads(cursor.fetchone()[0])["query_block"]
        table = analyzed["table"] if "table" in analyzed else analyzed["nested_loop"][0]["table"]
        assert table["r_rows"] == 1, analyzed


# A backlog as the tests' submit() writes it, but in one statement: 1 000 queues' rows through the API take long.
_BACKLOG_SQL = """
INSERT INTO grading_submission
    (queue_id, status, lms_header, lms_callback_url, callback_hash, lms_key, body, files, submitted_by_id,
     created_at, updated_at, lease_key, attempts, grader_reply, lms_body, failure_reason, delivery_attempts)
SELECT q, 'queued', '{}', 'http://127.0.0.1:9/cb/' || q || '/' || n, md5(q || '/' || n), 'k', '{}', '{}'::jsonb,
       NULL, now(), now(), '', 0, '', '', '', 0
FROM unnest(%s::bigint[], %s::int[]) AS s(q, size), generate_series(1, size) AS n
ORDER BY q, n
"""


def test_a_lease_and_the_counts_read_only_waiting_rows_with_plans_made_for_any_queue_among_many_queues(
    lms_user: Any, grader_user: Any
) -> None:
    """Prepared after five runs, PostgreSQL plans a statement once for any queue ("generic plan").

    With many queues of a few rows and one long one (statistics saying most rows wait), the plans through the
    foreign key's own index on queue_id walked the whole long queue: the lease sorted it to take its first row
    (70 ms a lease with 100 000 waiting), the counts read its rows handed out or not. Here every prepared
    statement runs its generic plan (plan_cache_mode), as a connection's later runs may.
    """
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    from grading.models import Queue

    queues = Queue.objects.bulk_create([Queue(name=f"q{i:04d}") for i in range(400)])
    big = queues[0]
    sizes = [20_000] + [3] * (len(queues) - 1)
    with connection.cursor() as cursor:
        cursor.execute(_BACKLOG_SQL, [lifecycle._pg_ids(q.pk for q in queues), "{" + ",".join(map(str, sizes)) + "}"])
        cursor.execute("ANALYZE grading_submission")  # statistics: every row waits
    ids = list(Submission.objects.filter(queue=big).order_by("pk").values_list("pk", flat=True))
    # Since then, the first 8 000 of the long queue were graded: handed out, still in the queue.
    Submission.objects.filter(pk__in=ids[:8000]).update(status=Status.DELIVERED)
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")

    def rows_fetched() -> int:
        # This transaction's own counters: the rows index scans fetched from the table so far.
        with connection.cursor() as cursor:
            cursor.execute("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'grading_submission'")
            return int(cursor.fetchone()[0])

    try:
        fetched, counted, full = [], [], []
        for n in range(15):
            before = rows_fetched()
            lease = lifecycle.lease_next(big, grader_user)
            fetched.append(rows_fetched() - before)
            assert lease is not None and lease.submission_id == ids[8000 + n]
            before = rows_fetched()
            assert lifecycle.queue_length(big.pk, limit=1) == 1
            counted.append(rows_fetched() - before)
            before = rows_fetched()
            assert lifecycle.queue_length(big.pk) == 12_000 - n - 1
            full.append(rows_fetched() - before)
        # The claim reads the head of sub_waiting, then the update takes the row it found: a few rows, every time.
        assert max(fetched) <= 3, fetched
        # "Is there work?" reads one index entry, and at most its row.
        assert max(counted) <= 1, counted
        # The full count reads the waiting ones (sub_waiting), not the 8 000 handed out before them.
        assert max(full) <= 12_000, full
        # Each of the three ran prepared, with its plan for any queue.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE generic_plans > 0 AND statement LIKE %s",
                ["%grading_submission%queue_id%"],
            )
            assert cursor.fetchone()[0] >= 3
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
