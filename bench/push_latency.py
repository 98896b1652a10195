"""Latency of a celery-mode queue: from the LMS's submit to the grade arriving at its callback, grader waiting.

Needs PostgreSQL, RabbitMQ and (for the scoring signal, as in production) Redis on this machine; the defaults
are a database ``gq_push_latency``, a RabbitMQ vhost ``gq_pushlat`` and Redis database 12, which the script
creates when missing (the vhost with ``rabbitmqctl``, so run it as a user allowed to)::

    .venv/bin/python bench/push_latency.py              # 200 submissions at 5 a second
    .venv/bin/python bench/push_latency.py -n 500 --rate 10 --database-url postgres://.../other_db

By hand, the database and the vhost are::

    psql postgres://postgres@127.0.0.1:5432/postgres -c 'CREATE DATABASE gq_push_latency'
    rabbitmqctl add_vhost gq_pushlat
    rabbitmqctl set_permissions -p gq_pushlat guest '.*' '.*' '.*'

It migrates the database, creates (or resets) a queue ``bench-push-latency`` in ``celery`` mode with no
in-flight cap, purges its broker queues, and starts gradequeue's Celery worker (threads pool) and one grader
worker (``gradequeue_grader``, a trivial grading function). It then submits a few warm-up answers one at a
time, each waited for, and discards them, so that the grader is consuming and every connection is open. Then
it submits N answers at a fixed rate, as the LMS's HTTP submit does (``grading.lifecycle.submit``, without a
web server in front), and times each from the moment submit returned to the moment the grade's callback
arrived at a listener it runs on 127.0.0.1 (matched by the ``lms_key`` in the callback's header). It prints
p50/p95/p99/max in ms, the number of callbacks, duplicates (a submission called back more than once) and lost
(never called back within ``--timeout``), as a table and as one JSON line.

Where the time goes: the submission's events in the database (queued, pulled, returned, graded, delivered)
give a timestamp per transition. Unless ``--no-probes`` is given, both workers also run with Celery signal
handlers (the same code otherwise: ``celery -A celery_app worker`` and ``gradequeue_grader.main``) that note
when each task message is published, received and started, so each broker hop is timed on its own. The
breakdown is printed per hop (p50, p95, mean); all timestamps are wall-clock times of this one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gradequeue_grader.protocol import GRADE_TASK, RECORD_TASK

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "bench-push-latency"
DISPATCH_TASK = "grading.dispatch"
SCORE_TASK = "grading.score_returned"
TARGET_P50_MS = 50.0

# --- Probes: Celery signal handlers that note each task message's publish, receipt and start -----------


def _submission_of(task: str, args: Any, kwargs: Any) -> int | None:
    if task == GRADE_TASK:
        return (kwargs or {}).get("submission_id")
    if task == RECORD_TASK and args:
        return int(args[0])
    return None


def install_probes(note: Callable[[str, str, int | None], None]) -> None:
    """Connect handlers to Celery's signals; ``note(event, task, submission_id)`` is called for each."""
    from celery import signals

    def published(sender: Any = None, body: Any = None, **_: Any) -> None:
        args, kwargs = (body[0], body[1]) if isinstance(body, tuple | list) and len(body) >= 2 else ((), {})
        note("publish", str(sender), _submission_of(str(sender), args, kwargs))

    def received(request: Any = None, **_: Any) -> None:
        note("receive", request.name, _submission_of(request.name, request.args, request.kwargs))

    def started(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
        note("start", task.name, _submission_of(task.name, args, kwargs))

    def finished(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
        note("end", task.name, _submission_of(task.name, args, kwargs))

    signals.before_task_publish.connect(published, weak=False)
    signals.task_received.connect(received, weak=False)
    signals.task_prerun.connect(started, weak=False)
    signals.task_postrun.connect(finished, weak=False)


def run_probed(kind: str, out: str, argv: list[str]) -> None:
    """Run gradequeue's worker (``worker``) or a grader (``grader``) with probes writing to ``out``."""
    fh = open(out, "a", buffering=1)  # noqa: SIM115 (open for the life of the process)
    lock = threading.Lock()

    def note(event: str, task: str, submission_id: int | None) -> None:
        line = json.dumps([time.time(), kind, event, task, submission_id])
        with lock:
            fh.write(line + "\n")

    install_probes(note)
    if kind == "grader":
        import gradequeue_grader

        gradequeue_grader.main(argv)
    else:
        from celery.__main__ import main as celery_main

        sys.argv = ["celery", *argv]
        celery_main()


# --- The LMS's callback listener ---------------------------------------------------------------------

arrivals: dict[str, list[float]] = defaultdict(list)
arrivals_lock = threading.Lock()


class Callback(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        try:
            key = json.loads(form["xqueue_header"][0])["lms_key"]
        except (KeyError, ValueError):
            key = "?"
        with arrivals_lock:
            arrivals[key].append(arrived)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


# --- Set-up --------------------------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (connecting to ``postgres`` on that server)."""
    import psycopg

    parsed = urllib.parse.urlparse(url)
    name = parsed.path.lstrip("/")
    admin = urllib.parse.urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def ensure_vhost(broker: str) -> None:
    """Create a local RabbitMQ vhost (and grant its user everything on it), as bench/run.py does."""
    url = urllib.parse.urlparse(broker)
    vhost = url.path.lstrip("/") or "/"
    if not url.scheme.startswith("amqp") or url.hostname not in ("127.0.0.1", "localhost") or vhost == "/":
        return
    try:
        listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return  # no rabbitmqctl here: the vhost had better exist
    if listed.returncode == 0 and vhost not in listed.stdout.split():
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        user = url.username or "guest"
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )


def purge(broker: str, names: list[str]) -> None:
    """Empty broker queues a previous (interrupted) run may have left messages in."""
    from kombu import Connection

    with Connection(broker) as conn:
        for name in names:
            with contextlib.suppress(Exception):  # a queue not declared yet
                conn.channel().queue_purge(name)


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- Figures ----------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:8.1f}"


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def load_probes(paths: list[Path]) -> list[tuple[float, str, str, str, int | None]]:
    rows = []
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    rows.append(tuple(json.loads(line)))
    return sorted(rows)  # type: ignore[arg-type]


def last_before(times: list[float], limit: float | None, floor: float | None = None) -> float | None:
    """The latest of ``times`` at or before ``limit`` (and at or after ``floor``)."""
    if limit is None:
        return None
    found = [t for t in times if t <= limit and (floor is None or t >= floor)]
    return max(found) if found else None


def first_after(times: list[float], floor: float | None, limit: float | None = None) -> float | None:
    if floor is None:
        return None
    found = [t for t in times if t >= floor and (limit is None or t <= limit)]
    return min(found) if found else None


# Each submission's path, in order; a hop is the time from one point to the next. (process, event, task)
# points come from the probes; "db:<status>" from the submission's events; the rest from this script.
POINTS = [
    ("submit returned", "lms"),
    ("dispatch task received (worker)", ("worker", "receive", DISPATCH_TASK)),
    ("dispatch task started", ("worker", "start", DISPATCH_TASK)),
    ("leased (event queued->pulled)", "db:pulled"),
    ("grade message published", ("worker", "publish", GRADE_TASK)),
    ("grade message received (grader)", ("grader", "receive", GRADE_TASK)),
    ("grading started (grader child)", ("grader", "start", GRADE_TASK)),
    ("reply published (grader)", ("grader", "publish", RECORD_TASK)),
    ("reply received (worker)", ("worker", "receive", RECORD_TASK)),
    ("record_result started", ("worker", "start", RECORD_TASK)),
    ("reply taken (event pulled->returned)", "db:returned"),
    ("scoring run published", ("worker", "publish", SCORE_TASK)),
    ("scoring run received", ("worker", "receive", SCORE_TASK)),
    ("scoring run started", ("worker", "start", SCORE_TASK)),
    ("scored (event returned->graded)", "db:graded"),
    ("callback arrived at the LMS", "callback"),
]


def timelines(
    measured: list[dict[str, Any]], events: dict[int, dict[str, float]], probes: list[tuple]
) -> list[dict[str, float | None]]:
    """Per submission, the time of each point of POINTS (None where it could not be told)."""
    by_id: dict[tuple[str, str, str, int], float] = {}
    untagged: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for when, process, event, task, submission_id in probes:
        if submission_id is None:
            untagged[(process, event, task)].append(when)
        else:
            by_id.setdefault((process, event, task, submission_id), when)
    result = []
    for item in measured:
        sid = item["id"]
        db = events.get(sid, {})
        t: dict[str, float | None] = {}
        t["submit returned"] = item["returned"]
        # The dispatch task carries the queue, not the submission: the first one after this submit started.
        dispatch_rx = first_after(untagged[("worker", "receive", DISPATCH_TASK)], item["started"], db.get("pulled"))
        t["dispatch task received (worker)"] = dispatch_rx
        t["dispatch task started"] = first_after(untagged[("worker", "start", DISPATCH_TASK)], dispatch_rx)
        t["leased (event queued->pulled)"] = db.get("pulled")
        for name, point in POINTS:
            if isinstance(point, tuple) and point[2] in (GRADE_TASK, RECORD_TASK):
                t[name] = by_id.get((*point, sid))
        t["reply taken (event pulled->returned)"] = db.get("returned")
        graded = db.get("graded")
        # A scoring run takes whatever replies are waiting: the latest one started before this was scored.
        score_start = last_before(untagged[("worker", "start", SCORE_TASK)], graded)
        t["scoring run started"] = score_start
        t["scoring run received"] = last_before(untagged[("worker", "receive", SCORE_TASK)], score_start)
        t["scoring run published"] = last_before(
            untagged[("worker", "publish", SCORE_TASK)], t["scoring run received"], db.get("returned")
        )
        t["scored (event returned->graded)"] = graded
        t["callback arrived at the LMS"] = item.get("arrived")
        t["delivered"] = db.get("delivered")
        result.append(t)
    return result


def hop_table(lines: list[dict[str, float | None]]) -> list[tuple[str, list[float]]]:
    """Milliseconds between consecutive known points, per hop (skipping points nobody could time)."""
    names = [name for name, _ in POINTS]
    known = [name for name in names if any(line.get(name) is not None for line in lines)]
    hops = []
    for a, b in itertools.pairwise(known):
        values = [
            (line[b] - line[a]) * 1000  # type: ignore[operator]
            for line in lines
            if line.get(a) is not None and line.get(b) is not None
        ]
        hops.append((f"{a} -> {b}", values))
    after = [
        (line["delivered"] - line["callback arrived at the LMS"]) * 1000  # type: ignore[operator]
        for line in lines
        if line.get("delivered") is not None and line.get("callback arrived at the LMS") is not None
    ]
    hops.append(("(after) callback arrived -> delivery recorded", after))
    return hops


# --- The run ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="measured submissions (default 200)")
    parser.add_argument("--rate", type=float, default=5.0, help="submissions per second (default 5)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up submissions, one at a time (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for callbacks after the last")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gq_push_latency")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/gq_pushlat")
    parser.add_argument("--cache", default="redis://127.0.0.1:6379/12", help="CACHE_URL ('' for none)")
    parser.add_argument("--celery-queue", default="gq-push-latency", help="gradequeue's own Celery queue")
    parser.add_argument("--worker-pool", choices=["threads", "prefork", "solo"], default="threads")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="gradequeue's worker (default 4)")
    parser.add_argument("--grader-concurrency", type=int, default=4)
    parser.add_argument("--grader-pool", choices=["prefork", "threads", "solo"], default="prefork")
    parser.add_argument("--task-events", action="store_true", help="leave Celery task events on")
    parser.add_argument("--no-probes", action="store_true", help="run the workers without the signal probes")
    parser.add_argument("--log-level", default="INFO", help="gradequeue's worker's log level (default INFO)")
    parser.add_argument("--logdir", default=None, help="where the workers' logs go (default: a new temp folder)")
    args = parser.parse_args()

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": args.database_url,
            "CELERY_BROKER_URL": args.broker,
            "CACHE_URL": args.cache,
            "GRADEQUEUE_CELERY_QUEUE": args.celery_queue,
            "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1",
            "CELERY_TASK_EVENTS": "true" if args.task_events else "false",
            "LOG_LEVEL": args.log_level,
        }
    )
    os.environ.setdefault("GRADEQUEUE_DEV", "1")
    sys.path.insert(0, str(ROOT))
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="push-latency-"))
    logdir.mkdir(parents=True, exist_ok=True)

    ensure_database(args.database_url)
    ensure_vhost(args.broker)

    import django

    django.setup()

    import logging

    from django.conf import settings
    from django.core.management import call_command

    from grading import lifecycle
    from grading.models import Queue, QueueMode, Submission, SubmissionEvent

    logging.getLogger("grading").setLevel(logging.WARNING)  # this process is the LMS: no transition lines
    call_command("migrate", verbosity=0)
    queue, _ = Queue.objects.update_or_create(name=QUEUE, defaults={"mode": QueueMode.CELERY, "max_in_flight": None})
    Submission.objects.filter(queue=queue).delete()
    purge(args.broker, [args.celery_queue, QUEUE])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    callback = f"http://127.0.0.1:{server.server_address[1]}/courses/bench/xqueue"
    run = f"{time.time():.0f}"

    worker_args = ["-A", "celery_app", "worker", "-Q", args.celery_queue, "--pool", args.worker_pool,
                   "--concurrency", str(args.worker_concurrency), "--loglevel", args.log_level,
                   "--without-gossip", "--without-mingle"]  # fmt: skip
    grader_args = ["--queue", QUEUE, "--function", "tests.e2e.graders:trivial", "--broker", args.broker,
                   "--concurrency", str(args.grader_concurrency), "--pool", args.grader_pool,
                   "--loglevel", "WARNING"]  # fmt: skip
    probe_files = [logdir / "probe-worker.jsonl", logdir / "probe-grader.jsonl"]
    for path in probe_files:
        path.unlink(missing_ok=True)
    if args.no_probes:
        worker_command = [sys.executable, "-m", "celery", *worker_args]
        grader_command = [sys.executable, "-m", "gradequeue_grader", *grader_args]
    else:
        me = str(Path(__file__).resolve())
        worker_command = [sys.executable, me, "--probe", "worker", str(probe_files[0]), *worker_args]
        grader_command = [sys.executable, me, "--probe", "grader", str(probe_files[1]), *grader_args]

    def submit(key: str) -> tuple[int, float, float]:
        started = time.time()
        submission, _length = lifecycle.submit(
            lifecycle.NewSubmission(
                queue=queue,
                lms_header=json.dumps({"lms_key": key}),
                lms_callback_url=f"{callback}/{key}/score_update",
                lms_key=key,
                body='{"student_response": "42"}',
                files={},
            ),
            None,
        )
        return submission.pk, started, time.time()

    def wait_for(keys: list[str], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with arrivals_lock:
                if all(key in arrivals for key in keys):
                    return True
            time.sleep(0.01)
        return False

    worker = spawn(worker_command, logdir / "worker.log")
    grader = spawn(grader_command, logdir / "grader.log")
    measured: list[dict[str, Any]] = []
    try:
        # Warm-up: the first waits for both workers to be up; each is waited for before the next.
        for i in range(args.warmup):
            key = f"{run}-warm-{i}"
            submit(key)
            if not wait_for([key], 90 if i == 0 else 30):
                raise SystemExit(f"warm-up submission {i} was not called back; see the logs in {logdir}")
            if worker.poll() is not None or grader.poll() is not None:
                raise SystemExit(f"a worker exited; see the logs in {logdir}")
        time.sleep(0.5)

        began = time.monotonic()
        for i in range(args.n):
            pause = began + i / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            key = f"{run}-{i}"
            pk, started, returned = submit(key)
            measured.append({"key": key, "id": pk, "started": started, "returned": returned})
        wait_for([item["key"] for item in measured], args.timeout)
        time.sleep(1.0)  # a duplicate would come soon after
    finally:
        stop(grader)
        stop(worker)
        server.shutdown()

    with arrivals_lock:
        got = {key: sorted(times) for key, times in arrivals.items()}
    keys = {item["key"] for item in measured}
    for item in measured:
        if item["key"] in got:
            item["arrived"] = got[item["key"]][0]
    latencies = [(item["arrived"] - item["returned"]) * 1000 for item in measured if "arrived" in item]
    submit_ms = [(item["returned"] - item["started"]) * 1000 for item in measured]
    callbacks = sum(len(got[k]) for k in keys if k in got)
    duplicates = sum(1 for k in keys if len(got.get(k, [])) > 1)
    lost = sum(1 for k in keys if k not in got)

    events: dict[int, dict[str, float]] = defaultdict(dict)
    ids = [item["id"] for item in measured]
    rows = SubmissionEvent.objects.filter(submission_id__in=ids).values_list("submission_id", "to_status", "created_at")
    for sid, status, created in rows.order_by("id"):
        events[sid].setdefault(str(status), created.timestamp())
    probes = [] if args.no_probes else load_probes(probe_files)
    hops = hop_table(timelines(measured, events, probes))

    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    broker_host = args.broker.split("@")[-1]
    database = settings.DATABASES["default"]
    print(f"broker: {broker_host}  database: {database['ENGINE'].split('.')[-1]} {database['NAME']}")
    print(
        f"{args.n} submissions at {args.rate:g}/s to a celery-mode queue; one grader ({args.grader_pool}, "
        f"concurrency {args.grader_concurrency}) waiting; gradequeue worker: {args.worker_pool} "
        f"x{args.worker_concurrency}; task events {'on' if args.task_events else 'off'}"
    )
    print()
    print("submit returned -> LMS callback (ms)")
    print(f"  p50 {fmt(p50)}   p95 {fmt(p95)}   p99 {fmt(p99)}   max {fmt(max(latencies, default=None))}")
    print(f"  callbacks {callbacks}   duplicates {duplicates}   lost {lost}   (submit call p50 "
          f"{fmt(percentile(submit_ms, 50)).strip()} ms)")  # fmt: skip
    print()
    print(f"{'hop':<78} {'p50':>8} {'p95':>8} {'mean':>8}  n")
    for name, values in hops:
        mean = statistics.fmean(values) if values else None
        print(f"{name:<78} {fmt(percentile(values, 50))} {fmt(percentile(values, 95))} {fmt(mean)}  {len(values)}")
    print(f"logs: {logdir}")
    print(
        json.dumps(
            {
                "workload": "push-celery-latency",
                "n": args.n,
                "rate": args.rate,
                "broker": broker_host,
                "database": database["ENGINE"].split(".")[-1],
                "grader_pool": args.grader_pool,
                "grader_concurrency": args.grader_concurrency,
                "worker_pool": args.worker_pool,
                "worker_concurrency": args.worker_concurrency,
                "task_events": args.task_events,
                "p50_ms": rounded(p50),
                "p95_ms": rounded(p95),
                "p99_ms": rounded(p99),
                "max_ms": rounded(max(latencies, default=None)),
                "mean_ms": rounded(statistics.fmean(latencies)) if latencies else None,
                "submit_p50_ms": rounded(percentile(submit_ms, 50)),
                "callbacks": callbacks,
                "duplicates": duplicates,
                "lost": lost,
                "target_p50_ms": TARGET_P50_MS,
                "target_met": p50 is not None and p50 < TARGET_P50_MS,
                "hops_p50_ms": {name: rounded(percentile(values, 50)) for name, values in hops},
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--probe":
        # Internal: how the script starts the workers, with probes (see the docstring).
        run_probed(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
