#!/usr/bin/env python3
"""The operator surfaces with a semester of data kept: 10 k, 100 k and 1 M submissions, side by side.

For each size, a PostgreSQL database holds that many kept submissions in eight queues with about five
events each, written by ``INSERT ... SELECT generate_series`` (1 M submissions and 5 M events in a few
minutes). The mix is what a semester leaves behind: the live states are the same size whatever the
history (2 000 queued, 200 leased, 100 failed awaiting their notice's delivery, 50 dead letters, 20 graded
awaiting delivery: the backlog is today's, not the semester's), and of the rest 3 % are superseded, 1 %
are delivered failure notices and the others delivered grades, created over 120 days. After loading, the
metrics' counters are rolled up from the events as beat would (its rate is printed: it is also what an
upgrade's first roll-ups cost).

Then, in rounds that alternate the sizes (a noisy machine slows them alike), a process per size measures
each surface in-process, through Django's full request stack where there is a URL: ``/metrics`` (with
nothing new to roll up, and with 1 000 new events, a scrape's share when grading is busy), the
status page, ``queue_stats``, the admin's submission list bare, with each filter and with its two
searches, one submission's timeline (its change page), ``get_queuelen`` (logged in as a grader),
and the reclaim and sweep tasks' functions. It prints one table: p50 and p99 per surface and size, and
the ratio of the 1 M p99 to the 10 k p99.

    python bench/scale.py                       # PostgreSQL at 127.0.0.1:5432, databases gq_scale_*
    SCALE_PG=postgres://postgres@127.0.0.1:5432 SCALE_DB_PREFIX=gq_scale python bench/scale.py \\
        --sizes 10000,100000,1000000 --rounds 5 --reps 20

A database that already holds its size is reused (``--rebuild`` builds it again).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("SCALE_PG", "postgres://postgres@127.0.0.1:5432")
PREFIX = os.environ.get("SCALE_DB_PREFIX", "gq_scale")
QUEUES = 8
TOKEN = "scale-bench-metrics-token"
GRADER_PASSWORD = "scale-bench-grader"

# Live states, the same at every size, newest ids last (the backlog is recent).
LIVE = [("queued", 2000), ("pulled", 200), ("failed", 100), ("dead_letter", 50), ("graded", 20)]

# Each kind of submission's events: (from, to, reason, seconds after its creation).
STEPS: dict[str, list[tuple[str, str, str, float]]] = {
    "delivered": [
        ("", "queued", "submitted", 0),
        ("queued", "pulled", "lease", 2),
        ("pulled", "returned", "result", 10),
        ("returned", "graded", "scored", 10.2),
        ("graded", "delivered", "delivered", 10.5),
    ],
    "notice": [
        ("", "queued", "submitted", 0),
        ("queued", "pulled", "lease", 2),
        ("pulled", "returned", "result", 10),
        ("returned", "failed", "invalid_reply", 10.2),
        ("failed", "delivered", "delivered", 10.5),
    ],
    "superseded": [
        ("", "queued", "submitted", 0),
        ("queued", "pulled", "lease", 2),
        ("pulled", "queued", "lease_expired", 302),
        ("queued", "superseded", "superseded", 400),
    ],
    "queued": [("", "queued", "submitted", 0)],
    "pulled": [("", "queued", "submitted", 0), ("queued", "pulled", "lease", 1)],
    "failed": [
        ("", "queued", "submitted", 0),
        ("queued", "pulled", "lease", 1),
        ("pulled", "returned", "result", 3),
        ("returned", "failed", "invalid_reply", 3.2),
    ],
    "dead_letter": [
        ("", "queued", "submitted", 0),
        ("queued", "pulled", "lease", 1),
        ("pulled", "returned", "result", 3),
        ("returned", "graded", "scored", 3.2),
        ("graded", "graded", "delivery_retry", 3.5),
        ("graded", "dead_letter", "delivery_failed", 6),
    ],
    "graded": [
        ("", "queued", "submitted", 0),
        ("queued", "pulled", "lease", 1),
        ("pulled", "returned", "result", 3),
        ("returned", "graded", "scored", 3.2),
    ],
}


def kind_sql(n: int) -> str:
    """The kind of submission number i (1..n), as SQL."""
    cases, upper = [], n
    for status, count in LIVE:
        cases.append(f"WHEN i > {upper - count} THEN '{status}'")
        upper -= count
    cases.append("WHEN i % 100 < 3 THEN 'superseded'")
    cases.append("WHEN i % 100 = 3 THEN 'notice'")
    return "CASE " + " ".join(cases) + " ELSE 'delivered' END"


def load_sql(n: int, first_queue: int, lms_user: int) -> list[str]:
    live = sum(count for _, count in LIVE)
    # Finished submissions over 120 days ending an hour ago; live ones one per second up to now.
    created = (
        f"CASE WHEN i > {n - live} THEN now() - ({n} - i) * interval '1 second' "
        f"ELSE now() - interval '1 hour' - ({n - live} - i)::float8 / {max(n - live, 1)} * interval '120 days' END"
    )
    url = (
        "'https://lms.example.org/courses/course-v1:X+C' || (i % 40) || '/xqueue/' || i"
        " || '/block-' || (i % 997) || '/score_update'"
    )
    steps = ", ".join(
        f"('{kind}', {k}, '{f}', '{t}', '{r}', {s})"
        for kind, rows in STEPS.items()
        for k, (f, t, r, s) in enumerate(rows)
    )
    return [
        "SET session_replication_role = replica",  # no FK triggers while loading
        f"""
        CREATE TEMP TABLE kinds AS
        SELECT i, {kind_sql(n)} AS kind, {created} AS created_at, {url} AS url FROM generate_series(1, {n}) AS i
        """,
        f"""
        INSERT INTO grading_submission (
            id, queue_id, status, lms_header, lms_callback_url, callback_hash, lms_key, body, files,
            submitted_by_id, created_at, updated_at, lease_key, lease_expires_at, leased_to_id, attempts,
            grader_reply, returned_at, lms_body, failure_reason, graded_at, delivery_attempts,
            delivery_started_at, next_delivery_at, delivered_at, superseded_by_id)
        SELECT i, {first_queue} + i % {QUEUES},
            CASE kind WHEN 'notice' THEN 'delivered' ELSE kind END,
            json_build_object('lms_callback_url', url, 'lms_key', 'key-' || i, 'queue_name', 'q')::text,
            url, encode(sha256(convert_to(url, 'UTF8')), 'hex'), 'key-' || i,
            '{{"student_response": "def f(x):\\n    return x * 2\\n", "grader_payload": "{{\\"grader\\": \\"p1\\"}}"}}',
            '{{}}', {lms_user}, created_at,
            created_at + interval '11 seconds',
            CASE kind WHEN 'pulled' THEN md5(i::text) ELSE '' END,
            CASE kind WHEN 'pulled' THEN now() + interval '10 minutes' END,
            NULL, CASE kind WHEN 'queued' THEN 0 ELSE 1 END,
            CASE WHEN kind IN ('queued', 'pulled') THEN '' ELSE '{{"correct": true, "score": 1, "msg": "ok"}}' END,
            CASE WHEN kind IN ('queued', 'pulled') THEN NULL ELSE created_at + interval '10 seconds' END,
            CASE WHEN kind IN ('queued', 'pulled', 'superseded') THEN '' ELSE '{{"correct": true}}' END,
            CASE WHEN kind IN ('notice', 'failed') THEN 'the grader reply is not JSON' ELSE '' END,
            CASE WHEN kind IN ('queued', 'pulled', 'superseded') THEN NULL
                 ELSE created_at + interval '10.2 seconds' END,
            CASE WHEN kind IN ('queued', 'pulled', 'superseded') THEN 0 ELSE 1 END,
            CASE WHEN kind IN ('queued', 'pulled', 'superseded') THEN NULL
                 ELSE created_at + interval '10.2 seconds' END,
            CASE WHEN kind IN ('failed', 'graded') THEN now() + interval '1 hour' END,
            CASE WHEN kind IN ('delivered', 'notice') THEN created_at + interval '10.5 seconds' END,
            NULL
        FROM kinds
        """,
        f"""
        INSERT INTO grading_submissionevent
            (submission_id, from_status, to_status, reason, actor, created_at, details)
        SELECT k.i, s.f, s.t, s.r, 'system:bench', k.created_at + s.secs * interval '1 second', '{{}}'
        FROM kinds AS k JOIN (VALUES {steps}) AS s(kind, n, f, t, r, secs) ON s.kind = k.kind
        ORDER BY k.i, s.n
        """,
        "SELECT setval(pg_get_serial_sequence('grading_submission', 'id'), (SELECT max(id) FROM grading_submission))",
        "SET session_replication_role = DEFAULT",
        "CREATE TABLE IF NOT EXISTS bench_scale_built (size bigint)",
        "DELETE FROM bench_scale_built",
        f"INSERT INTO bench_scale_built VALUES ({n})",
    ]


# --- The child processes (Django set up against one size's database) --------------------------------


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def build(n: int) -> dict[str, Any]:
    django_setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from grading import metrics
    from grading.models import Queue, QueueGrant, Role

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    users.create_superuser("scale-admin", "admin@example.org", "scale-admin-password")
    lms = users.create_user("scale-lms", password="unused")
    grader = users.create_user("scale-grader", password=GRADER_PASSWORD)
    queues = [Queue.objects.create(name=f"course-{q}") for q in range(QUEUES)]
    assert [q.pk for q in queues] == list(range(queues[0].pk, queues[0].pk + QUEUES))
    for queue in queues:
        QueueGrant.objects.create(user=lms, queue=queue, role=Role.LMS)
        QueueGrant.objects.create(user=grader, queue=queue, role=Role.GRADER)
    with connection.cursor() as cursor:
        for statement in load_sql(n, queues[0].pk, lms.pk):
            cursor.execute(statement)
    loaded = time.monotonic()
    connection.close()
    connection.connect()
    connection.connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    analyzed = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM grading_submissionevent")
        events = cursor.fetchone()[0]
    metrics.rollup()
    rolled = time.monotonic()
    return {
        "size": n,
        "events": events,
        "load_seconds": round(loaded - started, 1),
        "vacuum_seconds": round(analyzed - loaded, 1),
        "rollup_seconds": round(rolled - analyzed, 1),
        "rollup_events_per_second": round(events / max(rolled - analyzed, 1e-9)),
    }


def surfaces() -> list[tuple[str, Any]]:
    from django.test import Client

    from grading import lifecycle, stats
    from grading.models import Queue, Submission

    admin = Client()
    admin.login(username="scale-admin", password="scale-admin-password")
    grader = Client()
    answer = grader.post("/xqueue/login/", {"username": "scale-grader", "password": GRADER_PASSWORD})
    assert json.loads(answer.content)["return_code"] == 0, answer.content
    queue = Queue.objects.order_by("id")[3]
    # A delivered submission from the middle of the semester, and its callback URL.
    middle = Submission.objects.filter(status="delivered").order_by("id").values_list("id", "lms_callback_url")
    pk, url = middle[Submission.objects.filter(status="delivered").count() // 2]

    def get(client: Client, path: str, **extra: Any) -> Any:
        def call() -> None:
            response = client.get(path, **extra)
            assert response.status_code == 200, (path, response.status_code)

        return call

    listing = "/admin/grading/submission/"
    scrape = get(Client(), "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return [
        ("/metrics", scrape),
        ("/metrics, 1 000 new events", (new_events, scrape)),
        ("status page", get(admin, "/ops/status/")),
        ("queue_stats", stats.queue_stats),
        ("admin list", get(admin, listing)),
        ("admin list status=queued", get(admin, f"{listing}?status__exact=queued")),
        ("admin list status=delivered", get(admin, f"{listing}?status__exact=delivered")),
        ("admin list status=failed", get(admin, f"{listing}?status__exact=failed")),
        ("admin list queue", get(admin, f"{listing}?queue__id__exact={queue.pk}")),
        ("admin list age<5m", get(admin, f"{listing}?age=lt5m")),
        ("admin list age>1d", get(admin, f"{listing}?age=gt1d")),
        ("admin search id", get(admin, f"{listing}?q={pk}")),
        ("admin search callback", get(admin, listing, data={"q": url})),
        ("timeline (change page)", get(admin, f"{listing}{pk}/change/")),
        ("get_queuelen", get(grader, f"/xqueue/get_queuelen/?queue_name={queue.name}")),
        ("reclaim_expired", lifecycle.reclaim_expired),
        ("sweep_followups", lifecycle.sweep_followups),
    ]


def new_events() -> None:
    """What 1 000 transitions leave for the next scrape to roll up (about 15 s of grading at 13 grades/s):
    self-edges on the newest delivered submissions, untimed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO grading_submissionevent
                (submission_id, from_status, to_status, reason, actor, created_at, details)
            SELECT id, 'delivered', 'delivered', 'late_answer', 'system:bench', now(), '{}'
            FROM grading_submission WHERE status = 'delivered' ORDER BY id DESC LIMIT 1000
            """
        )


def measure(reps: int) -> dict[str, list[float]]:
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # a database built before the code's latest migration
    timings: dict[str, list[float]] = {}
    for name, surface in surfaces():
        prepare, call = surface if isinstance(surface, tuple) else (None, surface)
        for _ in range(2):  # warm: connections, caches, the first roll-up
            call()
        samples = []
        for _ in range(reps):
            if prepare is not None:
                prepare()
            t0 = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t0) * 1000)
        timings[name] = samples
    return timings


# --- The parent --------------------------------------------------------------------------------------


def admin_conn(dbname: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(f"{PG}/{dbname}", autocommit=True)


def built_size(dbname: str) -> int | None:
    import psycopg

    try:
        with admin_conn(dbname) as conn:
            row = conn.execute("SELECT size FROM bench_scale_built").fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def child_env(dbname: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"{PG}/{dbname}",
        "GRADEQUEUE_DEV": "1",
        "GRADEQUEUE_METRICS_TOKEN": TOKEN,
        "CELERY_BROKER_URL": "memory://",
        "LOG_LEVEL": "WARNING",
    }


def run_child(dbname: str, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, __file__, *args], env=child_env(dbname), capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        sys.exit(f"{dbname}: {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def label(n: int) -> str:
    return f"{n // 1_000_000} M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000} k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20, help="calls of each surface per round and size")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--child", choices=["build", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "build":
        print(json.dumps(build(args.size)))
        return
    if args.child == "measure":
        print(json.dumps(measure(args.reps)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    names = {n: f"{PREFIX}_{label(n).replace(' ', '').lower()}" for n in sizes}
    for n, dbname in names.items():
        if not args.rebuild and built_size(dbname) == n:
            print(f"{dbname}: {n} submissions, reused", flush=True)
            continue
        with admin_conn() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        report = run_child(dbname, "--child", "build", "--size", str(n))
        print(f"{dbname}: built {json.dumps(report)}", flush=True)

    if args.rounds == 0:
        return
    timings: dict[int, dict[str, list[float]]] = {n: {} for n in sizes}
    for r in range(args.rounds):
        for n in sizes:
            for surface, samples in run_child(names[n], "--child", "measure", "--reps", str(args.reps)).items():
                timings[n].setdefault(surface, []).extend(samples)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    first, last = sizes[0], sizes[-1]
    header = ["surface"] + [f"{label(n)} p50 / p99 ms" for n in sizes] + [f"{label(last)}/{label(first)} p50, p99"]
    rows = []
    for surface in timings[first]:
        cells = [surface]
        for n in sizes:
            s = timings[n][surface]
            cells.append(f"{statistics.median(s):.1f} / {percentile(s, 0.99):.1f}")
        a, b = timings[first][surface], timings[last][surface]
        cells.append(
            f"{statistics.median(b) / statistics.median(a):.2f}, {percentile(b, 0.99) / percentile(a, 0.99):.2f}"
        )
        rows.append(cells)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    samples_each = args.rounds * args.reps
    print(f"\n{samples_each} calls of each surface per size, in {args.rounds} rounds alternating the sizes.")


if __name__ == "__main__":
    main()
