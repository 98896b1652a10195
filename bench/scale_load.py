#!/usr/bin/env python3
"""The hot path at scale: 1 000 queues, 256 graders, and purge_submissions over 1 M kept submissions.

Three parts, each printing one table; each starts the production web server (``python -m config.serve``, two
workers of eight threads, on PostgreSQL, with the cache and broker of CACHE_URL and CELERY_BROKER_URL) on
databases it creates and seeds itself with one SQL statement per table (``--db-prefix``, default
``gq_scale_load``). No Celery worker runs: the figures are the web tier's. The graders are the load
generator's (``bench/loadgen.py``'s light client, each with its own session), with xqueue-watcher's 1 s timeout
counted (not enforced: a slow reply is still read, to time it).

- ``queues``: one grader account granted 1 000 queues holding from 0 to 100 000 waiting (one of 100 000, nine
  of 10 000, ninety of 1 000, the rest 0 to 100), against one account granted the single queue of a database
  that holds only it, with the same 100 000 waiting. Eight graders loop get_submission, put_result and
  get_queuelen on the 100 000 queue; a third variant pulls from queues of the 1 000 at random. Rounds alternate
  the databases, each with a fresh server; p50 and p99 of each endpoint, and the ratio of p99s to the single
  queue's.
- ``graders``: 256 graders against 2 x 8 web threads, beside 16 graders as the baseline, on a queue of 200 000
  waiting: all working (no grading time, each grader as fast as it can), then 16 working while 240 poll an
  empty queue as watchers do (1 s sleep after each empty reply) with the empty-poll wait on (0.5 s) and
  off; with ``--grade-seconds``, also 256 graders that each spend that long grading on average, as watchers
  running the students' code do. Counted: requests, 5xx and other HTTP errors, requests over 1 s, graded/s,
  p50/p99/max.
- ``purge``: 1 M delivered submissions kept (30 days old, five events each, rolled up into the metrics'
  counters as beat keeps them) beside a queue of 100 000 waiting; ``--purge-graders`` (16) pull for
  ``--purge-baseline`` seconds, then ``manage.py purge_submissions --older-than-days 7`` runs while they go
  on (once per ``--purge-batch`` and ``--purge-max-rate``, each on a fresh copy of the seeded database); the
  purge's rows/s, and the graders' p99 before and during.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres CACHE_URL=redis://127.0.0.1:6379/3 \\
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/gq_bench .venv/bin/python bench/scale_load.py --part all

DATABASE_URL names the PostgreSQL server (its database part is replaced by each part's own).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import HTTPError, Session

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "benchmark-only-secret-key-not-for-deployment"
# A machine secret (grading.credentials): a login costs one HMAC, so 256 graders log in at once.
GRADER_SECRET = "scale-load-bench-machine-secret-0123456789abc"
TIMEOUT = 1.0  # xqueue-watcher's REQUESTS_TIMEOUT
GRADE = json.dumps({"correct": True, "score": 1, "msg": "<p>Good.</p>"})

SEED_SQL = """
WITH subs AS (
    INSERT INTO grading_submission
        (queue_id, status, lms_header, lms_callback_url, callback_hash, lms_key, body, files, submitted_by_id,
         created_at, updated_at, lease_key, attempts, grader_reply, lms_body, failure_reason, delivery_attempts,
         returned_at, graded_at, delivered_at)
    SELECT q.id, %(status)s,
           json_build_object('lms_callback_url', url, 'lms_key', 'key-' || n, 'queue_name', q.name)::text,
           url, encode(sha256(convert_to(url, 'UTF8')), 'hex'), 'key-' || n,
           json_build_object(
               'grader_payload', '{"grader": "bench.py"}',
               'student_info', '{"anonymous_student_id": "bench", "submission_time": "20261125000000"}',
               'student_response', n::text)::text,
           '{}'::jsonb, %(lms_id)s::int, now() - %(age)s::interval, now() - %(age)s::interval, '', %(attempts)s,
           %(reply)s, %(reply)s, '', %(attempts)s, done_at, done_at, done_at
    FROM (SELECT id, name, size FROM grading_queue, unnest(%(ids)s::bigint[], %(sizes)s::int[]) AS s(qid, size)
          WHERE id = qid) AS q,
         LATERAL (SELECT n, 'http://127.0.0.1:9/cb/' || q.id || '/' || n AS url
                  FROM generate_series(1, q.size) AS n) AS numbered,
         LATERAL (SELECT CASE WHEN %(finished)s THEN now() - %(age)s::interval END AS done_at) AS finished
    ORDER BY q.id, n
    RETURNING id, queue_id, created_at
)
INSERT INTO grading_submissionevent (submission_id, from_status, to_status, reason, actor, created_at, details)
SELECT id, e.from_status, e.to_status, e.reason, 'user:lms', created_at, '{}'::jsonb
FROM subs, unnest(%(from)s::text[], %(to)s::text[], %(reasons)s::text[]) AS e(from_status, to_status, reason)
"""

# --- Databases ---------------------------------------------------------------------------------------------


def db_url(name: str) -> str:
    parts = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def admin_sql(*statements: str) -> None:
    import psycopg

    with psycopg.connect(db_url("postgres"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def server_env(database: str, **changes: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url(database),
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1",
        "GRADEQUEUE_DEV": "0",
        "LOG_LEVEL": "WARNING",
        "WEB_WORKERS": "2",
        "WEB_THREADS": "8",
        **changes,
    }


def seed(database: str, kind: str) -> None:
    """Create ``database`` afresh and fill it for ``kind`` (in a child process: Django is set up per database)."""
    admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'CREATE DATABASE "{database}"')
    started = time.monotonic()
    subprocess.run([sys.executable, __file__, "--seed", kind], check=True, env=server_env(database), cwd=ROOT)
    print(f"  seeded {database} ({kind}) in {time.monotonic() - started:.0f} s", flush=True)


def seed_here(kind: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from grading import credentials
    from grading.models import Queue, QueueGrant, Role

    call_command("migrate", verbosity=0)
    users = get_user_model().objects

    def account(name: str) -> Any:
        user = users.create_user(name)
        user.password = credentials.make_hash(GRADER_SECRET)
        user.save()
        return user

    lms = account("lms")

    def fill(sizes: dict[str, int], status: str = "queued", age: str = "0 seconds") -> None:
        ids = dict(Queue.objects.filter(name__in=sizes).values_list("name", "pk"))
        names = [name for name in sizes if sizes[name] > 0]
        finished = status == "delivered"
        steps = (
            [
                ("", "queued", "submitted"),
                ("queued", "pulled", "lease"),
                ("pulled", "returned", "result"),
                ("returned", "graded", "scored"),
                ("graded", "delivered", "delivered"),
            ]
            if finished
            else [("", "queued", "submitted")]
        )
        params = {
            "ids": "{" + ",".join(str(ids[n]) for n in names) + "}",
            "sizes": "{" + ",".join(str(sizes[n]) for n in names) + "}",
            "status": status,
            "lms_id": lms.pk,
            "age": age,
            "attempts": 1 if finished else 0,
            "reply": GRADE if finished else "",
            "finished": finished,
            "from": "{" + ",".join(f'"{s[0]}"' for s in steps) + "}",
            "to": "{" + ",".join(s[1] for s in steps) + "}",
            "reasons": "{" + ",".join(s[2] for s in steps) + "}",
        }
        with connection.cursor() as cursor:
            cursor.execute(SEED_SQL, params)

    if kind == "queues-one":
        queue = Queue.objects.create(name="big")
        QueueGrant.objects.create(user=account("grader"), queue=queue, role=Role.GRADER)
        fill({"big": 100_000})
    elif kind == "queues-many":
        sizes = {"big": 100_000}
        sizes.update({f"q{i:04d}": 10_000 for i in range(1, 10)})
        sizes.update({f"q{i:04d}": 1_000 for i in range(10, 100)})
        sizes.update({f"q{i:04d}": i % 101 for i in range(100, 1000)})
        queues = Queue.objects.bulk_create([Queue(name=name) for name in sizes])
        grader = account("grader")
        QueueGrant.objects.bulk_create([QueueGrant(user=grader, queue=q, role=Role.GRADER) for q in queues])
        fill(sizes)
    elif kind == "graders":
        work, idle = Queue.objects.create(name="work"), Queue.objects.create(name="idle")
        for i in range(16):
            grader = account(f"grader{i}")
            QueueGrant.objects.create(user=grader, queue=work, role=Role.GRADER)
            QueueGrant.objects.create(user=grader, queue=idle, role=Role.GRADER)
        fill({"work": 200_000})
    elif kind == "purge":
        Queue.objects.create(name="kept")
        work = Queue.objects.create(name="work")
        for i in range(16):
            QueueGrant.objects.create(user=account(f"grader{i}"), queue=work, role=Role.GRADER)
        fill({"kept": 1_000_000}, status="delivered", age="30 days")
        fill({"work": 100_000})
        # Counted as beat's roll-up keeps them in a running deployment: otherwise the purge's first batch would
        # roll up all 5 M events first (27 s on a quiet machine), and the purge's rate would include it.
        from grading import metrics

        metrics.rollup()
    else:
        raise SystemExit(f"unknown seed {kind!r}")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


# --- Server and graders ------------------------------------------------------------------------------------


def start(database: str, port: int, **changes: str) -> subprocess.Popen[bytes]:
    if os.environ.get("CACHE_URL", "").startswith("redis"):
        # Each database's accounts have their own ids and hashes: nothing cached for another may be served.
        import redis

        redis.Redis.from_url(os.environ["CACHE_URL"]).flushdb()
    env = server_env(database, WEB_BIND=f"127.0.0.1:{port}", **changes)
    process = subprocess.Popen([sys.executable, "-m", "config.serve"], cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if Session(f"http://127.0.0.1:{port}").request("GET", "/xqueue/status/")[0] == 200:
                return process
        except (HTTPError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Record:
    """What one grader thread saw: (endpoint, start offset, seconds, status) per request, and its grades."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, float, float, int]] = []
        self.graded = 0
        self.errors: Counter[str] = Counter()


def grader_loop(
    port: int,
    user: str,
    queues: list[str],
    stop_at: float,
    spec: dict[str, Any],
    record: Record,
    t0: float,
    done: Any,
) -> None:
    session = Session(f"http://127.0.0.1:{port}", timeout=30.0)
    if not session.login(user, GRADER_SECRET):
        record.errors["login failed"] += 1
        return
    rng = random.Random()

    def call(name: str, method: str, path: str, form: dict[str, str] | None = None) -> dict[str, Any] | None:
        started = time.monotonic()
        try:
            status, body, _ = session.request(method, path, form)
        except (HTTPError, OSError) as exc:
            record.errors[f"{name}: {type(exc).__name__}"] += 1
            session.close()
            return None
        record.requests.append((name, started - t0, time.monotonic() - started, status))
        if status != 200:
            record.errors[f"{name}: HTTP {status}"] += 1
            return None
        try:
            reply: dict[str, Any] = json.loads(body)
            return reply
        except ValueError:
            record.errors[f"{name}: not JSON"] += 1
            return None

    while time.monotonic() < stop_at and not done.is_set():
        queue = queues[0] if len(queues) == 1 else rng.choice(queues)
        q = urllib.parse.urlencode({"queue_name": queue})
        reply = call("get_submission", "GET", f"/xqueue/get_submission/?{q}&block=true")
        if reply is None:
            time.sleep(0.1)
            continue
        if reply["return_code"] != 0:
            if "is empty" not in str(reply["content"]):
                record.errors[f"get_submission: {str(reply['content'])[:60]}"] += 1
            time.sleep(spec.get("empty_sleep", 1.0))
            continue
        header = json.loads(reply["content"])["xqueue_header"]
        if spec.get("grade_seconds"):
            # As a watcher runs the student's code: half to one and a half times the mean, so that the
            # graders do not come back in step.
            time.sleep(spec["grade_seconds"] * rng.uniform(0.5, 1.5))
        reply = call("put_result", "POST", "/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": GRADE})
        if reply is not None and reply["return_code"] == 0:
            record.graded += 1
        elif reply is not None:
            record.errors[f"put_result: {str(reply['content'])[:60]}"] += 1
        if spec.get("queuelen"):
            reply = call("get_queuelen", "GET", f"/xqueue/get_queuelen/?{q}")
            if reply is not None and reply["return_code"] != 0:
                record.errors[f"get_queuelen: {str(reply['content'])[:60]}"] += 1
    session.close()


def grader_process(
    port: int, graders: list[tuple[str, list[str], dict[str, Any]]], stop_at: float, t0: float, done: Any, out: Any
) -> None:
    records = [Record() for _ in graders]
    threads = [
        threading.Thread(target=grader_loop, args=(port, user, queues, stop_at, spec, record, t0, done), daemon=True)
        for (user, queues, spec), record in zip(graders, records, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, stop_at - time.monotonic() + 60))
    out.put(
        [
            (r.requests, r.graded, dict(r.errors), spec.get("group", ""))
            for r, (_, _, spec) in zip(records, graders, strict=True)
        ]
    )


def drive(
    port: int,
    graders: list[tuple[str, list[str], dict[str, Any]]],
    seconds: float,
    processes: int,
    done: Any = None,
    t0: float | None = None,
) -> list[Any]:
    """Run the graders (spread over ``processes`` client processes) for ``seconds`` or until ``done`` is set.

    Request offsets are counted from ``t0`` (default: now). Returns every grader's record.
    """
    out: Any = multiprocessing.Queue()
    done = done or multiprocessing.Event()
    t0 = time.monotonic() if t0 is None else t0
    stop_at = time.monotonic() + seconds
    chunks = [graders[i::processes] for i in range(processes)]
    workers = [
        multiprocessing.Process(target=grader_process, args=(port, chunk, stop_at, t0, done, out), daemon=True)
        for chunk in chunks
        if chunk
    ]
    for w in workers:
        w.start()
    results = [record for _ in workers for record in out.get(timeout=seconds + 120)]
    for w in workers:
        w.join(10)
    return results


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def summary(results: list[Any], start: float, end: float, group: str | None = None) -> dict[str, Any]:
    """Figures of the requests that started in [start, end) seconds, of the graders of ``group`` (None: all)."""
    lat: dict[str, list[float]] = {}
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    graded = 0
    for requests, _graded, errs, g in results:
        if group is not None and g != group:
            continue
        errors.update(errs)
        for name, offset, seconds, status in requests:
            if start <= offset < end:
                lat.setdefault(name, []).append(seconds)
                lat.setdefault("all", []).append(seconds)
                statuses[status] += 1
                if name == "put_result" and status == 200:
                    graded += 1
    everything = lat.get("all", [])
    return {
        "lat": lat,
        "requests": len(everything),
        "over_1s": sum(1 for s in everything if s > TIMEOUT),
        "max_ms": max(everything) * 1000 if everything else float("nan"),
        "http_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "http_other": sum(n for s, n in statuses.items() if s != 200 and s < 500),
        "graded_per_s": graded / (end - start),
        "errors": errors,
    }


# --- Part 1: many queues -----------------------------------------------------------------------------------


def part_queues(args: argparse.Namespace) -> None:
    one, many = f"{args.db_prefix}_one", f"{args.db_prefix}_many"
    if not args.reuse:
        seed(one, "queues-one")
        seed(many, "queues-many")
    spread = ["big", *[f"q{i:04d}" for i in range(1, 100)]]
    variants = [
        ("1 queue", one, ["big"]),
        ("1000 queues, the 100k one", many, ["big"]),
        ("1000 queues, 100 at random", many, spread),
    ]
    collected: dict[str, list[Any]] = {name: [] for name, _, _ in variants}
    for rnd in range(args.rounds):
        for name, database, queues in variants if rnd % 2 == 0 else variants[::-1]:
            process = start(database, args.port, GRADEQUEUE_EMPTY_POLL_WAIT="0")
            try:
                graders = [("grader", queues, {"queuelen": True}) for _ in range(args.graders)]
                results = drive(args.port, graders, args.warmup + args.seconds, 1)
            finally:
                stop(process)
            s = summary(results, args.warmup, args.warmup + args.seconds)
            collected[name].append(results)
            print(f"  round {rnd + 1} {name}: {s['requests']} requests, errors {dict(s['errors'])}", flush=True)
    print(
        f"\nPart 1: {args.graders} graders, get_submission / put_result / get_queuelen, {args.rounds} rounds of "
        f"{args.seconds:.0f} s each, merged (ms; ratio of p99 to the single queue's)"
    )
    endpoints = ["get_submission", "put_result", "get_queuelen"]
    head = f"{'setup':<28}" + "".join(f"{e + ' p50':>18}{'p99':>8}{'x':>6}" for e in endpoints) + f"{'errors':>8}"
    print(head)
    base: dict[str, float] = {}
    for name, _, _ in variants:
        merged = [r for results in collected[name] for r in results]
        s = summary(merged, args.warmup, args.warmup + args.seconds)
        row = f"{name:<28}"
        for e in endpoints:
            p50, p99 = pct(s["lat"].get(e, []), 0.5), pct(s["lat"].get(e, []), 0.99)
            base.setdefault(e, p99)
            row += f"{p50:>18.2f}{p99:>8.2f}{p99 / base[e]:>6.2f}"
        print(row + f"{sum(s['errors'].values()):>8}", flush=True)


# --- Part 2: many graders ----------------------------------------------------------------------------------


def part_graders(args: argparse.Namespace) -> None:
    database = f"{args.db_prefix}_graders"
    if not args.reuse:
        seed(database, "graders")

    def working(n: int, group: str = "work") -> list[tuple[str, list[str], dict[str, Any]]]:
        return [(f"grader{i % 16}", ["work"], {"group": group}) for i in range(n)]

    idle = [(f"grader{i % 16}", ["idle"], {"group": "idle", "empty_sleep": 1.0}) for i in range(240)]
    runs = [
        ("16 working", working(16), {}),
        ("256 working", working(256), {}),
        *[
            (f"256 working, grading {g:g} s", [(u, q, {**spec, "grade_seconds": g}) for u, q, spec in working(256)], {})
            for g in args.grade_seconds
        ],
        ("16 working + 240 idle, wait 0.5 s", working(16) + idle, {"GRADEQUEUE_EMPTY_POLL_WAIT": "0.5"}),
        ("16 working + 240 idle, no wait", working(16) + idle, {"GRADEQUEUE_EMPTY_POLL_WAIT": "0"}),
    ]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in runs}
    for rnd in range(args.rounds):
        for name, graders, env in runs if rnd % 2 == 0 else runs[::-1]:
            process = start(database, args.port, **{"GRADEQUEUE_EMPTY_POLL_WAIT": "0.5", **env})
            try:
                results = drive(args.port, graders, args.warmup + args.seconds, args.client_processes)
            finally:
                stop(process)
            s = summary(results, args.warmup, args.warmup + args.seconds, "work")
            s["all"] = summary(results, args.warmup, args.warmup + args.seconds)
            rows[name].append(s)
            print(
                f"  round {rnd + 1} {name}: {s['graded_per_s']:.0f} graded/s, errors {dict(s['all']['errors'])}",
                flush=True,
            )
    print(
        f"\nPart 2: graders against 2 web workers x 8 threads, {args.seconds:.0f} s per run, {args.rounds} rounds "
        "(the working graders' requests; 5xx, other HTTP errors and requests over 1 s of all graders)"
    )
    print(
        f"{'run':<36}{'graded/s':>9}{'get p50':>9}{'p99':>8}{'put p50':>9}{'p99':>8}{'max':>8}"
        f"{'requests':>10}{'5xx':>5}{'other':>6}{'>1 s':>6}"
    )
    for name, _, _ in runs:
        for s in rows[name]:
            a = s["all"]
            print(
                f"{name:<36}{s['graded_per_s']:>9.0f}{pct(s['lat'].get('get_submission', []), 0.5):>9.1f}"
                f"{pct(s['lat'].get('get_submission', []), 0.99):>8.1f}{pct(s['lat'].get('put_result', []), 0.5):>9.1f}"
                f"{pct(s['lat'].get('put_result', []), 0.99):>8.1f}{a['max_ms']:>8.0f}{a['requests']:>10}"
                f"{a['http_5xx']:>5}{a['http_other']:>6}{a['over_1s']:>6}",
                flush=True,
            )


# --- Part 3: purge -----------------------------------------------------------------------------------------


def part_purge(args: argparse.Namespace) -> None:
    template, database = f"{args.db_prefix}_purge_template", f"{args.db_prefix}_purge"
    if not args.reuse:
        seed(template, "purge")
    rows = []
    for batch, max_rate in [(b, r) for b in args.purge_batch for r in args.purge_max_rate]:
        admin_sql(
            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'CREATE DATABASE "{database}" TEMPLATE "{template}"'
        )
        process = start(database, args.port, GRADEQUEUE_EMPTY_POLL_WAIT="0")
        done = multiprocessing.Event()
        t0 = time.monotonic()
        results: list[Any] = []
        graders = [(f"grader{i % 16}", ["work"], {}) for i in range(args.purge_graders)]
        runner = threading.Thread(
            target=lambda g=graders, d=done, r=results, t=t0: r.extend(
                drive(args.port, g, args.warmup + args.purge_baseline + args.purge_limit, 2, d, t)
            ),
            daemon=True,
        )
        try:
            runner.start()
            time.sleep(args.warmup + args.purge_baseline)
            p_start = time.monotonic() - t0
            command = ["manage.py", "purge_submissions", "--older-than-days", "7", "--batch", str(batch), "-v", "2"]
            purger = subprocess.Popen(
                [sys.executable, *command, *(["--max-rate", str(max_rate)] if max_rate else [])],
                cwd=ROOT,
                env=server_env(database),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                said = purger.communicate(timeout=args.purge_limit)[0].strip()
            except subprocess.TimeoutExpired:
                purger.terminate()  # stopped after --purge-limit s: the rate is of the rows gone by then
                said = f"stopped after {args.purge_limit:.0f} s"
                purger.communicate()
            p_end = time.monotonic() - t0
            done.set()
            runner.join(180)
        finally:
            done.set()
            stop(process)
        import psycopg

        with psycopg.connect(db_url(database)) as conn:
            left = conn.execute("SELECT count(*) FROM grading_submission WHERE status = 'delivered'").fetchone()
        deleted = 1_000_000 - int(left[0] if left else 0)
        before = summary(results, args.warmup, args.warmup + args.purge_baseline)
        during = summary(results, p_start, p_end)
        rows.append((batch, max_rate, deleted, p_end - p_start, before, during, said))
        print(f"  batch {batch}, max rate {max_rate or '-'}: {' '.join(said.split())[:300]}", flush=True)
    print(
        f"\nPart 3: purge_submissions over 1 M delivered submissions (5 M events) while {args.purge_graders} graders "
        f"pull; {args.purge_baseline:.0f} s before the purge, then during it (ms)"
    )
    print(
        f"{'batch':>6}{'max rate':>9}{'deleted':>9}{'seconds':>9}{'subs/s':>8}{'p50 before':>12}{'p99':>8}"
        f"{'p50 during':>12}{'p99':>8}{'max':>8}{'graded/s before':>17}{'during':>8}{'errors':>8}"
    )
    for batch, max_rate, deleted, seconds, before, during, _ in rows:
        b, d = before["lat"].get("all", []), during["lat"].get("all", [])
        print(
            f"{batch:>6}{max_rate or '-':>9}{deleted:>9}{seconds:>9.0f}{deleted / seconds:>8.0f}"
            f"{pct(b, 0.5):>12.1f}{pct(b, 0.99):>8.1f}"
            f"{pct(d, 0.5):>12.1f}{pct(d, 0.99):>8.1f}{during['max_ms']:>8.0f}{before['graded_per_s']:>17.0f}"
            f"{during['graded_per_s']:>8.0f}{sum(during['errors'].values()):>8}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["queues", "graders", "purge", "all"], default="all")
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--db-prefix", default="gq_scale_load")
    parser.add_argument("--reuse", action="store_true", help="use the databases of an earlier run as they are")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--graders", type=int, default=8, help="graders of parts 1 (and half of part 3's)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--client-processes", type=int, default=8)
    parser.add_argument(
        "--grade-seconds",
        type=float,
        action="append",
        default=[],
        help="part 2: also 256 graders that each spend this long grading on average (repeatable)",
    )
    parser.add_argument("--purge-baseline", type=float, default=20.0)
    parser.add_argument("--purge-graders", type=int, default=16)
    parser.add_argument("--purge-limit", type=float, default=900.0, help="the purge is stopped after this long")
    parser.add_argument("--purge-batch", type=int, action="append", help="repeatable; default 500")
    parser.add_argument(
        "--purge-max-rate",
        type=int,
        action="append",
        help="purge_submissions --max-rate; repeatable, 0: no limit (default)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT_BASE", "28141")) + 20)
    args = parser.parse_args()
    if args.seed:
        seed_here(args.seed)
        return 0
    args.purge_batch = args.purge_batch or [500]
    args.purge_max_rate = args.purge_max_rate or [0]
    for part in ["queues", "graders", "purge"] if args.part == "all" else [args.part]:
        {"queues": part_queues, "graders": part_graders, "purge": part_purge}[part](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
