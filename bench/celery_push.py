"""Throughput of a celery-mode queue: submissions graded per second by one grader worker.

Run against the database and broker you want to measure (it migrates the database and creates a queue
``bench-celery-push`` in it), for example::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gradequeue_bench \\
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// \\
    GRADEQUEUE_DEV=1 .venv/bin/python bench/celery_push.py -n 1000

It starts gradequeue's Celery worker as a subprocess, lets the LMS side submit N answers (callbacks go to
a listener it runs on 127.0.0.1), waits until all are dispatched, starts one grader (``python -m
gradequeue_grader``, concurrency 4, a trivial grading function), waits until every grade has been
delivered, and prints:

* graded per second: replies taken by gradequeue, from the first to the last (the grader's start-up
  excluded) — the rate of the whole grading loop: dispatch, broker, grader, reply through the broker;
* delivered per second: the same for grades arriving at the LMS.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("GRADEQUEUE_DEV", "1")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from grading import lifecycle  # noqa: E402
from grading.models import Queue, QueueMode, Status, Submission  # noqa: E402

QUEUE = "bench-celery-push"
received = 0
lock = threading.Lock()


class Callback(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        global received
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def rate(times: list) -> float:
    times = sorted(times)
    span = (times[-1] - times[0]).total_seconds()
    return (len(times) - 1) / span if span > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="submissions (default 1000)")
    parser.add_argument("--grader-concurrency", type=int, default=4)
    parser.add_argument("--worker-concurrency", type=int, default=4, help="gradequeue's own worker (threads)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    queue, _ = Queue.objects.update_or_create(name=QUEUE, defaults={"mode": QueueMode.CELERY, "max_in_flight": None})
    Submission.objects.filter(queue=queue).delete()

    # A listen backlog like a real web server's (http.server's default of 5 drops connection attempts in a
    # burst of POSTs, and a dropped SYN costs the client a 1 s retransmission).
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    callback = f"http://127.0.0.1:{server.server_address[1]}/courses/bench/xqueue"

    broker = settings.CELERY_BROKER_URL
    worker = spawn([sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "threads",
                    "--concurrency", str(args.worker_concurrency), "--loglevel", "WARNING",
                    "--without-gossip", "--without-mingle"])  # fmt: skip
    grader = None
    try:
        started = time.monotonic()
        for i in range(args.n):
            lifecycle.submit(
                lifecycle.NewSubmission(
                    queue=queue,
                    lms_header=f'{{"lms_key": "k{i}"}}',
                    lms_callback_url=f"{callback}/{i}/score_update",
                    lms_key=f"k{i}",
                    body='{"student_response": "42"}',
                    files={},
                ),
                None,
            )
        submitted = time.monotonic() - started
        # Everything is dispatched (on the broker queue) before the grader starts, so that the rate below is
        # the grading loop's, not the submitting's.
        deadline = time.monotonic() + args.timeout
        while Submission.objects.filter(queue=queue, status=Status.QUEUED).exists():
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the dispatch")
            time.sleep(0.2)
        grader_command = [sys.executable, "-m", "gradequeue_grader", "--queue", QUEUE, "--function",
                          "tests.e2e.graders:trivial", "--broker", broker, "--concurrency",
                          str(args.grader_concurrency), "--loglevel", "WARNING"]  # fmt: skip
        options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
        if "data_folder_in" in options:
            grader_command += ["--broker-folder", options["data_folder_in"]]
        grader = spawn(grader_command)
        deadline = time.monotonic() + args.timeout
        while received < args.n and time.monotonic() < deadline:
            time.sleep(0.2)
        if received < args.n:
            raise SystemExit(f"timed out: {received} of {args.n} grades delivered")
    finally:
        if grader is not None:
            stop(grader)
        stop(worker)
        server.shutdown()

    rows = Submission.objects.filter(queue=queue)
    returned = list(rows.values_list("returned_at", flat=True))
    delivered = list(rows.values_list("delivered_at", flat=True))
    attempts = set(rows.values_list("attempts", flat=True))
    assert rows.filter(status=Status.DELIVERED).count() == args.n, "not every submission was delivered"
    print(f"broker: {broker.split('@')[-1]}  database: {settings.DATABASES['default']['ENGINE'].split('.')[-1]}")
    print(f"{args.n} submissions, one grader worker of concurrency {args.grader_concurrency}, trivial grading")
    print(f"submitted in {submitted:.1f} s; leases per submission: {sorted(attempts)}; LMS callbacks: {received}")
    print(f"graded per second:    {rate(returned):.1f}")
    print(f"delivered per second: {rate(delivered):.1f}")


if __name__ == "__main__":
    main()
