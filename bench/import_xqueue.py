"""A switch-over from openedx/xqueue, end to end: import a few hundred xqueue rows and count LMS deliveries.

Run against the database and broker you want (it migrates the database and creates a queue
``switch-over`` in it), with a MariaDB/MySQL server for the xqueue side (``GRADEQUEUE_TEST_MYSQL_URL``, default
``mysql://root@127.0.0.1:3306``)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gradequeue_switch \\
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// \\
    GRADEQUEUE_DEV=1 .venv/bin/python bench/import_xqueue.py --waiting 300 --graded 200

It creates an xqueue database with xqueue's table holding ``--waiting`` unfinished rows (half of them pulled
by a grader that never answered), ``--graded`` rows graded but never acknowledged by the LMS, and as many
finished rows (retired or acknowledged) as a distraction; it starts gradequeue's web server and Celery worker
as subprocesses and an LMS listener on 127.0.0.1; runs ``manage.py import_xqueue`` (twice: the second run
must import nothing), lets the worker deliver the graded rows, then lets a grader pull and answer every
waiting row, and prints how many grades the LMS received, for which rows, and how often.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("GRADEQUEUE_DEV", "1")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from grading.models import Queue, QueueGrant, Role, Status, Submission  # noqa: E402
from tests.xqclient import XQueueClient  # noqa: E402
from tests.xqueuedb import xqueue_database  # noqa: E402

QUEUE = "switch-over"
received: Counter[str] = Counter()
bodies: dict[str, str] = {}
lock = threading.Lock()


class LMS(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        header = form.get("xqueue_header", [""])[0]
        with lock:
            received[header] += 1
            bodies[header] = form.get("xqueue_body", [""])[0]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def wait(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def grade(score: float) -> str:
    return json.dumps({"correct": score > 0, "score": score, "msg": f"<p>{score}</p>"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiting", type=int, default=300)
    parser.add_argument("--graded", type=int, default=200)
    parser.add_argument("--port", type=int, default=18171, help="gradequeue's web server (18171)")
    args = parser.parse_args()

    lms = ThreadingHTTPServer(("127.0.0.1", 0), LMS)
    lms.daemon_threads = True
    threading.Thread(target=lms.serve_forever, daemon=True).start()
    lms_base = f"http://127.0.0.1:{lms.server_address[1]}"

    call_command("migrate", verbosity=0)
    if Submission.objects.filter(queue__name=QUEUE).exists():
        raise SystemExit(f"queue {QUEUE!r} already has submissions: use a fresh database")
    queue, _ = Queue.objects.get_or_create(name=QUEUE)
    from django.contrib.auth import get_user_model

    grader, _ = get_user_model().objects.get_or_create(username="switch-grader")
    grader.set_password("switch-grader-pw")
    grader.save()
    QueueGrant.objects.get_or_create(user=grader, queue=queue, role=Role.GRADER)

    env = {
        **os.environ,
        "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1",
        "GRADEQUEUE_CELERY_QUEUE": os.environ.get("GRADEQUEUE_CELERY_QUEUE", "gradequeue-switch-over"),
        "PYTHONPATH": str(ROOT),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "threads",
            "-c",
            "4",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    web = subprocess.Popen(
        [sys.executable, "-m", "config.serve"],
        cwd=ROOT,
        env={**env, "WEB_BIND": f"127.0.0.1:{args.port}", "WEB_WORKERS": "1"},
        start_new_session=True,
    )
    try:
        t0 = datetime(2026, 11, 30, 8, 0, 0)
        expected: dict[str, str | None] = {}  # header -> the xqueue grade it must carry (None: graded here)
        with xqueue_database() as xq:
            rows = []
            for i in range(args.waiting + args.graded):
                url = f"{lms_base}/courses/course-v1:X+Y+Z/xqueue/{i}/block-v1:X+Y+Z+type@problem+block@p/score_update"
                header = json.dumps({"lms_callback_url": url, "lms_key": f"key-{i}", "queue_name": QUEUE})
                graded = i >= args.waiting
                pulled = t0 + timedelta(minutes=1) if i % 2 else None
                reply = grade(round(i / 1000, 3)) if graded else ""
                expected[header] = reply or None
                rows.append(
                    (
                        QUEUE,
                        header,
                        url,
                        json.dumps({"student_response": str(i)}),
                        t0 + timedelta(seconds=i),
                        pulled,
                        t0 + timedelta(minutes=2) if graded else None,
                        reply,
                    )
                )
            xq.insert_many(rows)
            for i in range(args.waiting + args.graded):
                url = f"{lms_base}/finished/{i}"
                xq.insert(queue_name=QUEUE, callback_url=url, grader_reply=grade(1), lms_ack=True, retired=i % 2 == 0)
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "manage.py", "import_xqueue", "--source", xq.url], cwd=ROOT, env=env, check=True
            )
            imported_in = time.monotonic() - started
            print("-- the same import again:")
            subprocess.run(
                [sys.executable, "manage.py", "import_xqueue", "--source", xq.url], cwd=ROOT, env=env, check=True
            )

        delivered_in = wait(lambda: sum(received.values()) >= args.graded, 120, "the imported grades")
        print(
            f"imported {args.waiting + args.graded} rows in {imported_in:.2f} s; the {args.graded} graded ones "
            f"reached the LMS {delivered_in:.2f} s after the import ended, with no grader running"
        )

        watcher = XQueueClient(f"http://127.0.0.1:{args.port}", "switch-grader", "switch-grader-pw")
        wait(lambda: _up(watcher), 60, "the web server")
        pulled_bodies = []
        while (reply := watcher.get_submission(QUEUE))["return_code"] == 0:
            content = json.loads(reply["content"])
            pulled_bodies.append(json.loads(content["xqueue_body"])["student_response"])
            watcher.put_result(content["xqueue_header"], grade(0.5))
        wait(lambda: sum(received.values()) >= args.waiting + args.graded, 120, "every grade")
        time.sleep(1.0)  # anything sent twice would arrive now
        with lock:
            counts = dict(received)
            got = dict(bodies)
        print(
            f"a grader pulled {len(pulled_bodies)} submissions; in xqueue's order: "
            f"{pulled_bodies == [str(i) for i in range(args.waiting)]}"
        )
        print(
            f"LMS callbacks: {sum(counts.values())} for {len(counts)} distinct submissions; "
            f"delivered more than once: {sum(1 for c in counts.values() if c > 1)}; "
            f"missing: {len(set(expected) - set(counts))}; unexpected: {len(set(counts) - set(expected))}"
        )
        xqueue_grades = sum(1 for h, g in expected.items() if g is not None and got.get(h) == g)
        print(f"graded-but-undelivered rows delivered with xqueue's own grade: {xqueue_grades} of {args.graded}")
        statuses = Counter(Submission.objects.filter(queue=queue).values_list("status", flat=True))
        print(f"gradequeue statuses: {dict(statuses)}; delivered: {statuses.get(Status.DELIVERED, 0)}")
    finally:
        for process in (web, worker):
            os.killpg(process.pid, signal.SIGTERM)
        for process in (web, worker):
            process.wait(30)
        lms.shutdown()


def _up(client: XQueueClient) -> bool:
    try:
        return client.get_queuelen(QUEUE)["return_code"] == 0
    except Exception:
        return False


if __name__ == "__main__":
    main()
