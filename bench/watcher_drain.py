#!/usr/bin/env python3
"""N watcher-like graders with xqueue-watcher's 1 s request timeout drain a backlog from a freshly started gradequeue.

The server is started as ``make run`` starts it (``manage.py migrate``, ``seed_queues``, ``sync_schedule``,
``dev_setup``, then the Procfile under honcho: Granian, a Celery worker and beat) in a folder of its own: SQLite and the
filesystem broker by default, or whatever DATABASE_URL / CELERY_BROKER_URL / CACHE_URL say (the production
configuration; the database should be empty or new). The LMS account submits the backlog over HTTP, to a
callback listener of this script; then the graders start, cold (the web processes have never seen a grader
login). Each grader behaves like a 2026 xqueue-watcher thread: GET of the login page, login, then
get_submission / put_result with ``X-CSRFToken`` and ``Referer``, a fresh login on a 302, 1 s after an empty
poll; a request that takes longer than the timeout is dropped, as the watcher drops it (a get_submission
answered too late is a lease nobody holds; a put_result too late, a lost reply).

Prints, per endpoint, requests, those over the timeout and the longest; logins; wall time from the graders'
start to the last grade reaching the LMS listener; graded; submissions handed out more than once; grades
called back more than once. The machine is shared: compare runs made side by side.

    .venv/bin/python bench/watcher_drain.py [--graders 8] [--submissions 1000] [--rounds 2] [--port 18150]

``--rounds 2`` drains a second backlog against the same, now warm, service. ``--watcher PYTHON`` runs a real
xqueue-watcher instead (one installed for that interpreter, or importable from ``--watcher-source DIR``),
configured as the README's "Connect xqueue-watcher" says, with its handler and ``CONNECTIONS`` = ``--graders``;
the request figures then come from the server's access log, and "logins" counts login POSTs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import requests

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "test-123"  # dev_setup's defaults
GRADER = ("grader", "grader-dev-password")
LMS = ("lms", "lms-dev-password")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.timeouts: Counter[str] = Counter()
        self.handed_out: Counter[str] = Counter()
        self.called_back: Counter[str] = Counter()
        self.logins = 0
        self.login_failures = 0
        self.last_callback = 0.0

    def note(self, name: str, seconds: float, timed_out: bool) -> None:
        with self.lock:
            self.latency[name].append(seconds)
            if timed_out:
                self.timeouts[name] += 1


class Grader(threading.Thread):
    def __init__(self, base: str, stats: Stats, timeout: float, done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.stats, self.timeout, self.done = base, stats, timeout, done
        self.session = requests.Session()

    def request(self, name: str, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        start = time.monotonic()
        try:
            reply = self.session.request(
                method, self.base + path, timeout=self.timeout, allow_redirects=False, **kwargs
            )
        except requests.Timeout:
            self.stats.note(name, time.monotonic() - start, True)
            return None
        except requests.ConnectionError:
            self.stats.note(name, time.monotonic() - start, True)
            time.sleep(0.2)
            return None
        self.stats.note(name, time.monotonic() - start, False)
        return reply

    def login(self) -> bool:
        self.session.cookies.clear()
        self.session.headers.pop("X-CSRFToken", None)
        if self.request("login_page", "GET", "/xqueue/login/") is None:
            return False
        token = self.session.cookies.get("csrftoken")
        headers = {"Referer": self.base + "/xqueue/login/", **({"X-CSRFToken": token} if token else {})}
        reply = self.request(
            "login", "POST", "/xqueue/login/", data={"username": GRADER[0], "password": GRADER[1]}, headers=headers
        )
        ok = reply is not None and reply.status_code == 200 and reply.json().get("return_code") == 0
        with self.stats.lock:
            self.stats.logins += 1
            self.stats.login_failures += 0 if ok else 1
        if ok:
            token = self.session.cookies.get("csrftoken")
            self.session.headers.update({"Referer": self.base, **({"X-CSRFToken": token} if token else {})})
        return ok

    def call(self, name: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        for _ in range(2):
            reply = self.request(name, method, path, **kwargs)
            if reply is None:
                return None
            if reply.status_code in (301, 302, 401, 403):
                if not self.login():
                    return None
                continue
            return reply.json() if reply.status_code == 200 else None
        return None

    def run(self) -> None:
        while not self.login():
            if self.done.wait(1.0):  # the 2025 watcher retries its login; the 2026 one dies here
                return
        while not self.done.is_set():
            reply = self.call("get_submission", "GET", "/xqueue/get_submission/", params={"queue_name": QUEUE})
            if reply is None:
                continue  # the watcher polls again at once after a timeout
            if reply.get("return_code") != 0:
                self.done.wait(1.0)
                continue
            content = json.loads(reply["content"])
            number = json.loads(content["xqueue_body"])["student_response"]
            with self.stats.lock:
                self.stats.handed_out[number] += 1
            grade = json.dumps({"correct": True, "score": 1, "msg": f"<p>{number}</p>"})
            self.call(
                "put_result",
                "POST",
                "/xqueue/put_result/",
                data={"xqueue_header": content["xqueue_header"], "xqueue_body": grade},
            )


def listener(stats: Stats) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            header = json.loads(parse_qs(body)["xqueue_header"][0])
            with stats.lock:
                stats.called_back[header["lms_key"]] += 1
                stats.last_callback = time.monotonic()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.request_queue_size = 256
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_service(port: int, var_dir: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GRADEQUEUE_DEV": "1",
        "GRADEQUEUE_VAR_DIR": var_dir,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    python = sys.executable
    for command in (["migrate", "--noinput"], ["seed_queues"], ["sync_schedule"]):
        subprocess.run([python, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
    base = f"http://127.0.0.1:{port}"
    subprocess.run(
        [python, "manage.py", "dev_setup", "--base-url", base], cwd=ROOT, env=env, check=True, capture_output=True
    )
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(Path(python).parent / "honcho"), "start", "--no-colour", "-f", "Procfile"],
        cwd=ROOT,
        env={**env, "GQ_PYTHON": python, "GQ_HOST": "127.0.0.1", "GQ_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        log.write(line)
        if b"gradequeue is listening" in line:
            # Keep reading: the web server's access log goes there, and a full pipe would stop it.
            threading.Thread(target=lambda: log.writelines(process.stdout), daemon=True).start()  # type: ignore[arg-type]
            return process
    raise SystemExit(f"the service did not start; see {log_path}")


def submit_backlog(base: str, numbers: range, callback: str) -> None:
    def worker(part: range) -> None:
        session = requests.Session()
        session.post(base + "/xqueue/login/", data={"username": LMS[0], "password": LMS[1]}, timeout=30)
        for n in part:
            header = {"lms_callback_url": f"{callback}/cb/{n}", "lms_key": str(n), "queue_name": QUEUE}
            payload = json.dumps({"grader": "answer.py", "answer": "42"})
            body = {"grader_payload": payload, "student_info": "{}", "student_response": str(n)}
            reply = session.post(
                base + "/xqueue/submit/",
                data={"xqueue_header": json.dumps(header), "xqueue_body": json.dumps(body)},
                timeout=30,
            ).json()
            assert reply["return_code"] == 0, reply

    threads = [threading.Thread(target=worker, args=(numbers[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def readme_handler() -> str:
    """The xqueue-watcher handler the README shows ("Connect xqueue-watcher"), as its text."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nfrom xqueue_watcher.grader import Grader\n") + len("```python\n")
    return text[start : text.index("```", start)]


def start_watcher(
    python: str, source: str | None, base: str, connections: int, folder: Path
) -> subprocess.Popen[bytes]:
    """A real xqueue-watcher (its own virtualenv's ``python``), configured as the README says, with the
    README's handler; its log goes to ``folder/watcher.log``."""
    (folder / "conf.d").mkdir(parents=True, exist_ok=True)
    (folder / "graders").mkdir(exist_ok=True)
    (folder / "answer_grader.py").write_text(readme_handler())
    conf = {
        QUEUE: {
            "SERVER": base,
            "AUTH": list(GRADER),
            "CONNECTIONS": connections,
            "HANDLERS": [
                {"HANDLER": "answer_grader.AnswerGrader", "KWARGS": {"grader_root": str(folder / "graders") + "/"}}
            ],
        }
    }
    (folder / "conf.d" / f"{QUEUE}.json").write_text(json.dumps(conf))
    log = (folder / "watcher.log").open("ab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), source]))}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    return subprocess.Popen(
        [python, "-m", "xqueue_watcher", "-d", str(folder)],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def access_log(log_path: Path, offset: int, timeout: float) -> dict[str, Any]:
    """What the server's access log says about the XQueue requests written after ``offset``: the server's
    view of each request's time, which is what a real watcher's timeout sees (plus the network)."""
    times: dict[str, list[float]] = defaultdict(list)
    with log_path.open("rb") as log:
        log.seek(offset)
        for raw in log:
            line = raw.decode(errors="replace")
            if '"' not in line or "/xqueue/" not in line:
                continue
            try:
                request = line.split('"')[1]
                method, path = request.split(" ")[:2]
                seconds = float(line.rsplit(" ", 1)[-1]) / 1000
            except ValueError:
                continue
            name = path.split("?")[0].strip("/").split("/")[-1]
            if name == "login":
                name = "login" if method == "POST" else "login_page"
            times[name].append(seconds)
    return times


def db_counts(env_vars: dict[str, str]) -> dict[str, int]:
    """Leases so far, expired leases, and submissions leased more than once, from the service's database."""
    script = (
        "import json\n"
        "from django.db.models import Count, Q\n"
        "from grading.models import Submission, SubmissionEvent\n"
        "events = SubmissionEvent.objects\n"
        "twice = Submission.objects.annotate(n=Count('events', filter=Q(events__reason='lease'))).filter(n__gt=1)\n"
        "print(json.dumps({'leases': events.filter(reason='lease').count(),\n"
        "    'lease_expired': events.filter(reason='lease_expired').count(), 'handed_out_twice': twice.count()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env_vars,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(times: dict[str, list[float]], timeouts: Counter[str] | None, timeout: float) -> int:
    print(f"  {'endpoint':<16}{'requests':>9}{'over':>7}{'max s':>8}{'p99 s':>8}")
    over_total = 0
    for name in ("login_page", "login", "get_submission", "put_result"):
        values = sorted(times.get(name, []))
        if not values:
            continue
        over = timeouts[name] if timeouts is not None else sum(1 for v in values if v > timeout)
        over_total += over
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"  {name:<16}{len(values):>9}{over:>7}{values[-1]:>8.3f}{p99:>8.3f}")
    return over_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graders", type=int, default=8, help="grader connections (the watcher's CONNECTIONS)")
    parser.add_argument("--submissions", type=int, default=1000, help="backlog per round")
    parser.add_argument("--rounds", type=int, default=1, help="the first is cold, the others warm (same service)")
    parser.add_argument("--port", type=int, default=18150)
    parser.add_argument("--timeout", type=float, default=1.0, help="each request's timeout (the watcher's: 1 s)")
    parser.add_argument("--deadline", type=float, default=400.0, help="give up a round after this many seconds")
    parser.add_argument(
        "--watcher",
        metavar="PYTHON",
        help="instead of the built-in graders, run a real xqueue-watcher installed for this python "
        "(README's configuration and handler); figures then come from the server's access log",
    )
    parser.add_argument(
        "--watcher-source", metavar="DIR", help="a watcher checkout to import it from (one not installed with pip)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the service's folder (database, logs)")
    args = parser.parse_args()

    stats = Stats()
    lms = listener(stats)
    callback = f"http://127.0.0.1:{lms.server_address[1]}"
    var_dir = tempfile.mkdtemp(prefix="gq-drain-")
    log_path = Path(var_dir) / "service.log"
    configuration = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "SQLite (make run)"
    graders = f"xqueue-watcher ({args.watcher})" if args.watcher else "built-in graders"
    print(f"service: {configuration}, folder {var_dir}; {args.graders} connections of {graders}")
    service = start_service(args.port, var_dir, log_path)
    base = f"http://127.0.0.1:{args.port}"
    env_vars = {**os.environ, "GRADEQUEUE_DEV": "1", "GRADEQUEUE_VAR_DIR": var_dir}
    watcher: subprocess.Popen[bytes] | None = None
    try:
        for round_no in range(args.rounds):
            numbers = range(round_no * args.submissions, (round_no + 1) * args.submissions)
            started = time.monotonic()
            submit_backlog(base, numbers, callback)
            print(f"round {round_no + 1} ({'cold' if round_no == 0 else 'warm'}): backlog submitted in "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
            before = db_counts(env_vars)
            offset = log_path.stat().st_size
            round_stats = Stats()
            round_stats.called_back = stats.called_back  # shared with the listener
            goal = (round_no + 1) * args.submissions
            done = threading.Event()
            start = time.monotonic()
            if args.watcher:
                folder = Path(var_dir) / f"watcher-{round_no + 1}"
                watcher = start_watcher(args.watcher, args.watcher_source, base, args.graders, folder)
                threads = []
            else:
                threads = [Grader(base, round_stats, args.timeout, done) for _ in range(args.graders)]
                for thread in threads:
                    thread.start()
            died_at = None
            while time.monotonic() - start < args.deadline:
                with stats.lock:
                    if len(stats.called_back) >= goal:
                        break
                if watcher is not None and watcher.poll() is not None and died_at is None:
                    died_at = time.monotonic() - start
                    break
                time.sleep(0.2)
            done.set()
            for thread in threads:
                thread.join(timeout=5)
            with stats.lock:
                graded = sum(1 for n in numbers if str(n) in stats.called_back)
                twice = sum(1 for n in numbers if stats.called_back.get(str(n), 0) > 1)
                last = stats.last_callback
            wall = (last if graded else time.monotonic()) - start
            if watcher is not None:
                watcher.send_signal(signal.SIGTERM)
                try:
                    watcher.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(watcher.pid, signal.SIGKILL)
                    watcher.wait()
                watcher = None
            time.sleep(1.0)  # the access log's last lines
            if args.watcher:
                times = access_log(log_path, offset, args.timeout)
                over = table(times, None, args.timeout)
                logins = len(times.get("login", []))
                log_text = (Path(var_dir) / f"watcher-{round_no + 1}" / "watcher.log").read_text(errors="replace")
                login_failures = log_text.count("Could not log in") + log_text.count("Log in error")
                died = died_at is not None or "Client died" in log_text
            else:
                times = round_stats.latency
                over = table(times, round_stats.timeouts, args.timeout)
                logins, login_failures, died = round_stats.logins, round_stats.login_failures, False
            after = db_counts(env_vars)
            summary = {
                "configuration": configuration,
                "graders": graders,
                "connections": args.graders,
                "round": "cold" if round_no == 0 else "warm",
                "logins": logins,
                "login_failures": login_failures,
                "watcher_died": died,
                "requests_over_timeout": over,
                "max_latency_s": round(max((max(v) for v in times.values() if v), default=0.0), 3),
                "wall_s": round(wall, 1),
                "graded": graded,
                "handed_out_twice": after["handed_out_twice"] - before["handed_out_twice"],
                "leases_expired": after["lease_expired"] - before["lease_expired"],
                "called_back_twice": twice,
            }
            print("  " + json.dumps(summary))
            if died:
                break
    finally:
        if watcher is not None:
            os.killpg(watcher.pid, signal.SIGKILL)
        service.send_signal(signal.SIGINT)  # Ctrl-C, as in make run: honcho stops every process group
        try:
            service.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        lms.shutdown()
    if args.keep:
        print(f"kept {var_dir}")
    else:
        subprocess.run(["rm", "-rf", var_dir], check=False)


if __name__ == "__main__":
    main()
