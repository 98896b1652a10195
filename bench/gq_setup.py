#!/usr/bin/env python3
"""Prepare a gradequeue database for the benchmark: migrations, the periodic schedule, a pull queue, grader
and LMS accounts, and a backlog.

The backlog rows are exactly what ``lifecycle.submit`` writes for an LMS submission (the submission, queued,
and its "submitted" event), inserted in one SQL statement: submitting 100 000 over HTTP would take minutes
per run. The live workload submits over HTTP instead.

Usage (DATABASE_URL set): gq_setup.py GRADERS BACKLOG CALLBACK_PORT [QUEUE]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from grading.models import Queue, QueueGrant, Role  # noqa: E402

SEED_SQL = """
WITH subs AS (
    INSERT INTO grading_submission
        (queue_id, status, lms_header, lms_callback_url, callback_hash, lms_key, body, files, submitted_by_id,
         created_at, updated_at, lease_key, attempts, grader_reply, lms_body, failure_reason, delivery_attempts)
    SELECT %(queue_id)s::bigint, 'queued',
           json_build_object('lms_callback_url', url, 'lms_key', 'key-' || n, 'queue_name', %(queue)s::text)::text,
           url, encode(sha256(convert_to(url, 'UTF8')), 'hex'), 'key-' || n,
           json_build_object(
               'grader_payload', '{"grader": "bench.py"}',
               'student_info', '{"anonymous_student_id": "bench", "submission_time": "20261125000000"}',
               'student_response', n::text)::text,
           '{}'::jsonb, %(lms_id)s::int, now(), now(), '', 0, '', '', '', 0
    FROM (SELECT n, 'http://127.0.0.1:' || %(port)s::text || '/cb/' || n AS url
          FROM generate_series(0, %(last)s::int) AS n) AS numbered
    ORDER BY n
    RETURNING id, created_at
)
INSERT INTO grading_submissionevent (submission_id, from_status, to_status, reason, actor, created_at, details)
SELECT id, '', 'queued', 'submitted', 'user:lms', created_at, json_build_object('queue', %(queue)s::text)::jsonb
FROM subs
"""

# The same rows on MySQL/MariaDB (no RETURNING there: the events are written from the rows just inserted).
# MariaDB's sequence tables number the rows; MySQL 8 would need a recursive CTE instead.
MYSQL_SEED_SQL = [
    """
INSERT INTO grading_submission
    (queue_id, status, lms_header, lms_callback_url, callback_hash, lms_key, body, files, submitted_by_id,
     created_at, updated_at, lease_key, attempts, grader_reply, lms_body, failure_reason, delivery_attempts)
SELECT %(queue_id)s, 'queued',
       JSON_OBJECT('lms_callback_url', url, 'lms_key', CONCAT('key-', n), 'queue_name', %(queue)s),
       url, SHA2(url, 256), CONCAT('key-', n),
       JSON_OBJECT(
           'grader_payload', '{"grader": "bench.py"}',
           'student_info', '{"anonymous_student_id": "bench", "submission_time": "20261125000000"}',
           'student_response', CAST(n AS CHAR)),
       '{}', %(lms_id)s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), '', 0, '', '', '', 0
FROM (SELECT seq AS n, CONCAT('http://127.0.0.1:', %(port)s, '/cb/', seq) AS url FROM seq_0_to_%(last)s) AS numbered
ORDER BY n
""",
    """
INSERT INTO grading_submissionevent (submission_id, from_status, to_status, reason, actor, created_at, details)
SELECT id, '', 'queued', 'submitted', 'user:lms', created_at, JSON_OBJECT('queue', %(queue)s)
FROM grading_submission WHERE queue_id = %(queue_id)s ORDER BY id
""",
]


def main() -> None:
    graders, backlog, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    queue_name = sys.argv[4] if len(sys.argv) > 4 else "bench"
    call_command("migrate", verbosity=0)
    call_command("sync_schedule", verbosity=0)
    queue, _ = Queue.objects.get_or_create(name=queue_name)
    users = get_user_model().objects
    accounts = [(f"grader{i}", Role.GRADER) for i in range(1, graders + 1)] + [("lms", Role.LMS)]
    for username, role in accounts:
        user = users.filter(username=username).first() or users.create_user(username, password="bench-password")
        QueueGrant.objects.get_or_create(user=user, queue=queue, role=role)
    lms_id = users.get(username="lms").pk
    params = {"queue_id": queue.pk, "queue": queue_name, "lms_id": lms_id, "port": str(port), "last": backlog - 1}
    if backlog and connection.vendor == "mysql":
        with transaction.atomic(), connection.cursor() as cursor:
            # A table name cannot be a parameter: the sequence table's bound is put in as an integer.
            cursor.execute(MYSQL_SEED_SQL[0].replace("%(last)s", str(int(backlog - 1))), params)
            cursor.execute(MYSQL_SEED_SQL[1], params)
    elif backlog:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(SEED_SQL, params)
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("ANALYZE TABLE grading_submission, grading_submissionevent")
            cursor.fetchall()
        else:
            cursor.execute("VACUUM ANALYZE")
    print(f"gradequeue: {len(accounts)} accounts, backlog {backlog}")


if __name__ == "__main__":
    main()
