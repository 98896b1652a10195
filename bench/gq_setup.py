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
    if backlog:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                SEED_SQL,
                {"queue_id": queue.pk, "queue": queue_name, "lms_id": lms_id, "port": str(port), "last": backlog - 1},
            )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"gradequeue: {len(accounts)} accounts, backlog {backlog}")


if __name__ == "__main__":
    main()
