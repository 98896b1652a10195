"""Prepare an edx-submissions database: migrate, grader accounts in the 'xqueue' group, and a backlog
seeded through the package's own Python API (``submissions.api.create_external_grader_detail``, what the
LMS calls when a student submits to an external grader).

Creating one submission through the API costs about 15 ms of Python here, so a 100 000 backlog would take
half an hour: the first ``API_SEEDED`` (2 000) go through the API, and the rest are copies of the same rows
(student item, submission, external grader detail) made in one SQL statement each, with their own uuids.

Usage: python setup_bench.py GRADERS BACKLOG [QUEUE]
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
os.environ["EDX_SEEDING"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from submissions.api import create_external_grader_detail  # noqa: E402

API_SEEDED = 2000

CLONE_SQL = """
WITH items AS (
    INSERT INTO submissions_studentitem (student_id, course_id, item_id, item_type)
    SELECT 'student-' || n, 'course-v1:Bench+B1+2026', 'problem-' || (n %% 50), 'problem'
    FROM generate_series(%(first)s, %(last)s) AS n
    RETURNING id, substr(student_id, 9)::int AS n
), subs AS (
    INSERT INTO submissions_submission
        (uuid, attempt_number, submitted_at, created_at, raw_answer, student_item_id, status)
    SELECT gen_random_uuid(), 1, now() + n * interval '1 microsecond', now() + n * interval '1 microsecond',
           '"' || n || '"', id, 'A'
    FROM items
    RETURNING id, submitted_at, raw_answer
)
INSERT INTO submissions_externalgraderdetail
    (queue_name, grader_file_name, points_possible, status, status_time, created_at, num_failures,
     submission_id, queue_key)
SELECT %(queue)s, 'bench.py', 1, 'pending', submitted_at, submitted_at, 0, id, 'key-' || trim('"' from raw_answer)
FROM subs
"""


def main() -> None:
    graders, backlog = int(sys.argv[1]), int(sys.argv[2])
    queue = sys.argv[3] if len(sys.argv) > 3 else "bench"
    call_command("migrate", verbosity=0)
    group, _ = Group.objects.get_or_create(name="xqueue")
    password = make_password("bench-password")
    for i in range(1, graders + 1):
        user, _ = User.objects.get_or_create(username=f"grader{i}", defaults={"password": password})
        user.groups.add(group)
    started = time.monotonic()
    api_seeded = min(backlog, API_SEEDED)
    for first in range(0, api_seeded, 1000):  # one transaction per thousand, to keep commits out of the way
        with transaction.atomic():
            for n in range(first, min(first + 1000, api_seeded)):
                create_external_grader_detail(
                    {
                        "student_id": f"student-{n}",
                        "course_id": "course-v1:Bench+B1+2026",
                        "item_id": f"problem-{n % 50}",
                        "item_type": "problem",
                    },
                    str(n),
                    queue,
                    f"key-{n}",
                    grader_file_name="bench.py",
                    points_possible=1,
                )
    if backlog > API_SEEDED:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(CLONE_SQL, {"first": API_SEEDED, "last": backlog - 1, "queue": queue})
    print(f"seeded {backlog} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
