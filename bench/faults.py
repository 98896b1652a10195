#!/usr/bin/env python3
"""The fault campaign as a benchmark: gradequeue under live traffic while its parts fail, one scenario at a time.

Every scenario runs on private instances that this script starts under a temporary folder and stops at the
end: a PostgreSQL cluster, a RabbitMQ node (the Celery broker) and a redis-server (the cache), each on a free
port of 127.0.0.1. It never touches any other server on the machine: every fault is done to its own
processes (SIGKILL, ``pg_ctl restart``, ``rabbitmqctl -n <its own node> stop_app``, stopping its own redis).

For each scenario it copies a migrated template database, starts gradequeue's web (``python -m config.serve``),
a Celery worker and beat from ``--checkout`` with the production settings (``GRADEQUEUE_DEV=0``), a real HTTP
LMS listener whose behaviour the scenario sets (answering in 50-150 ms unless the scenario says otherwise),
an LMS that submits over HTTP at a fixed rate, and four watcher-like graders (``bench/loadgen.py``'s HTTP
client, with xqueue-watcher's 1 s request timeout and 1 s sleep after an empty poll). The fault starts a few
seconds into the traffic. Afterwards the script waits (bounded) until every accepted submission has reached
the LMS, the database has nothing left to do, and the LMS has heard nothing for a few seconds.

Per scenario it prints one row:

- accepted: submissions the LMS sent that gradequeue accepted (``return_code`` 0);
- delivered once: accepted submissions whose grade the LMS received exactly once;
- duplicates: grades the LMS received beyond the first, summed over submissions (a POST the LMS answered
  200, or that it took in and would have answered 200 after the sender had given up waiting);
- lost: accepted submissions whose grade never reached the LMS by the end of the scenario;
- 5xx: HTTP 5xx replies to the LMS and the graders (connection errors are counted apart, in the JSON);
- recover: seconds from the end of the fault until the last grade owed at that moment reached the LMS.

The JSON lines (one per scenario, with the database's final statuses, the client-side errors and the
Idempotency-Key headers the LMS saw) go to ``bench/results/faults-<stamp>-<label>.jsonl``.

Usage: faults.py [--checkout DIR] [--label before] [--only worker-kill,pg-restart] [--count N] [--span SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

HOST = "127.0.0.1"
GRADERS = 4
PASSWORD = "bench-password"  # bench/gq_setup.py's accounts
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/bin"))
LMS_LATENCY = (0.05, 0.15)
QUIET_SECONDS = 6.0  # the LMS heard nothing for this long: a late duplicate would have arrived by then
SETTLED = ("delivered", "dead_letter", "superseded", "cancelled")


_next_port = int(os.environ.get("BENCH_PORT_BASE", "0"))


def free_port() -> int:
    """A free port of 127.0.0.1: the next free one from BENCH_PORT_BASE on when that is set, else any."""
    global _next_port
    while True:
        port = _next_port
        if port:
            _next_port += 1
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- private services ----------------------------------------------------------------------------------


class Services:
    """A private PostgreSQL cluster, RabbitMQ node and redis-server under one temporary folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg_port, self.redis_port = free_port(), free_port()
        self.amqp_port, self.dist_port = free_port(), free_port()
        self.node = f"gqfaults{os.getpid()}@localhost"
        self.redis: subprocess.Popen[bytes] | None = None
        self.root = os.geteuid() == 0

    # PostgreSQL refuses to run as root: as root, its folder belongs to the postgres user and it runs as that.
    def _as(self, user: str, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", user, "--", *cmd] if self.root else cmd

    @property
    def pg_url(self) -> str:
        return f"postgres://postgres@{HOST}:{self.pg_port}"

    @property
    def broker_url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}//"

    @property
    def cache_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.pg_port} -k {self.tmp / 'pg'} -c listen_addresses={HOST} -c max_connections=200"
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(self.tmp / "pg" / "data"), "-l", str(self.tmp / "pg" / "log")]
        subprocess.run(self._as("postgres", [*cmd, "-w", "-o", options, *args]), check=True, capture_output=True)

    def start_pg(self) -> None:
        (self.tmp / "pg").mkdir()
        if self.root:
            shutil.chown(self.tmp / "pg", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.tmp / "pg" / "data"), "-A", "trust", "-U", "postgres"]
        subprocess.run(self._as("postgres", [*initdb, "--no-sync"]), check=True, capture_output=True)
        self._pg_ctl("start")

    def restart_pg(self) -> None:
        self._pg_ctl("-m", "fast", "restart")

    def stop_pg(self) -> None:
        self._pg_ctl("-m", "immediate", "stop")

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            ["psql", f"{self.pg_url}/{db}", "-v", "ON_ERROR_STOP=1", "-qtAc", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()

    def start_redis(self) -> None:
        (self.tmp / "redis").mkdir(exist_ok=True)
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp / "redis"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_port(self.redis_port, 20):
            raise RuntimeError("the private redis-server did not start")

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait()

    def flush_redis(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "FLUSHALL"], check=True, capture_output=True)

    def _rabbit_env(self) -> dict[str, str]:
        rmq = self.tmp / "rabbitmq"
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(rmq / "mnesia"),
            "RABBITMQ_LOG_BASE": str(rmq / "log"),
            "RABBITMQ_CONFIG_FILE": str(rmq / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(rmq / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(rmq / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(rmq / "pid"),
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def rabbitmqctl(self, *args: str) -> None:
        # Always with -n: the node this script started, never the machine's own.
        subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self._rabbit_env(), check=True, capture_output=True)

    def start_rabbit(self) -> None:
        rmq = self.tmp / "rabbitmq"
        rmq.mkdir()
        (rmq / "rabbitmq.conf").write_text(f"listeners.tcp.1 = {HOST}:{self.amqp_port}\n")
        (rmq / "rabbitmq-env.conf").write_text("")
        (rmq / "enabled_plugins").write_text("[].\n")
        if self.root:
            # The rabbitmq-server script runs the node as the rabbitmq user.
            for path in [rmq, *rmq.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        with open(self.tmp / "rabbitmq.out", "ab") as out:
            subprocess.Popen(
                ["rabbitmq-server"], env=self._rabbit_env(), stdout=out, stderr=out, start_new_session=True
            )
        if not wait_port(self.amqp_port, 120):
            raise RuntimeError(f"the private RabbitMQ node did not start (see {self.tmp / 'rabbitmq.out'})")

    def stop_rabbit(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"], env=self._rabbit_env(), check=False, capture_output=True
        )

    def start(self) -> None:
        log(
            f"private services in {self.tmp}: PostgreSQL :{self.pg_port}, RabbitMQ :{self.amqp_port}, "
            f"Redis :{self.redis_port}"
        )
        self.start_pg()
        self.start_redis()
        self.start_rabbit()

    def stop(self) -> None:
        self.stop_redis()
        self.stop_rabbit()
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop_pg()


# --- the LMS -------------------------------------------------------------------------------------------


class LMS:
    """The LMS's callback listener, POST /cb/<n>, whose behaviour a scenario switches.

    Modes: ``ok`` (answer 200 after ``latency`` seconds, drawn uniformly), ``503`` (answer 503 at once),
    ``refuse`` (listening socket closed and every open connection dropped: connection refused). A grade counts
    as received when the LMS would answer 200, even if the sender stopped waiting before the answer went out
    (an LMS processes a request whatever happens to the connection afterwards).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "ok"
        self.latency = LMS_LATENCY
        self.lock = threading.Lock()
        self.sessions: dict[str, loadgen.Session] = {}
        self.received: dict[str, list[float]] = {}
        self.keys: dict[str, list[str]] = {}
        # Every POST taken in: (number, Idempotency-Key, arrived, taken in, answered), monotonic seconds
        # (answered: None when the answer could not be written, the sender gone).
        self.posts: list[tuple[str, str, float, float, float | None]] = []
        self.notices: set[str] = set()
        self.refused_posts = 0
        self.answered_503 = 0
        self.last_post = 0.0
        self.conns: set[socket.socket] = set()
        self.busy: set[socket.socket] = set()
        self.sock: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        self.sock = socket.create_server((HOST, self.port), backlog=1024)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def set_mode(self, mode: str, latency: tuple[float, float] = LMS_LATENCY) -> None:
        with self.lock:
            previous, self.mode, self.latency = self.mode, mode, latency
            # Idle connections are dropped at once; one whose request is being answered gets its answer first.
            conns = list(self.conns - self.busy) if mode == "refuse" else []
        if mode == "refuse" and previous != "refuse":
            assert self.sock is not None
            # shutdown first: close() alone leaves the socket listening while the accept thread waits on it.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        elif previous == "refuse" and mode != "refuse":
            self._listen()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = loadgen.Reader(conn, request=True)
        with self.lock:
            self.conns.add(conn)
        try:
            while True:
                message = reader.read()
                if message is None:
                    return
                arrived = self.last_post = time.monotonic()
                number = message.target.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
                with self.lock:
                    mode, latency = self.mode, self.latency
                    if mode == "refuse":
                        self.refused_posts += 1
                        return
                    if mode == "503":
                        self.answered_503 += 1
                    else:
                        self.busy.add(conn)
                if mode == "503":
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    continue
                time.sleep(random.uniform(*latency))
                form = urllib.parse.parse_qs(message.body.decode("utf-8", "replace"))
                key = message.get("idempotency-key") or ""
                taken = time.monotonic()
                with self.lock:
                    self.received.setdefault(number, []).append(taken)
                    self.keys.setdefault(number, []).append(key)
                    if '"correct": null' in (form.get("xqueue_body") or [""])[0]:
                        self.notices.add(number)
                answered: float | None = None
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    answered = time.monotonic()
                finally:
                    with self.lock:
                        self.posts.append((number, key, arrived, taken, answered))
                with self.lock:
                    self.busy.discard(conn)
                    if self.mode == "refuse":
                        return
                if not message.keep_alive:
                    return
        except (loadgen.HTTPError, OSError, ValueError):
            return
        finally:
            with self.lock:
                self.conns.discard(conn)
                self.busy.discard(conn)
            conn.close()

    def first_arrivals(self) -> dict[str, float]:
        with self.lock:
            return {n: ts[0] for n, ts in self.received.items()}

    def stop(self) -> None:
        self.set_mode("refuse")


# --- gradequeue's processes ----------------------------------------------------------------------------


class Gradequeue:
    """gradequeue's web, worker and beat for one scenario, as the production deployment runs them."""

    def __init__(self, checkout: Path, env: dict[str, str], logdir: Path, name: str, concurrency: int) -> None:
        self.checkout, self.env, self.logdir, self.name = checkout, env, logdir, name
        self.concurrency = concurrency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.web_port = int(env["WEB_BIND"].rpartition(":")[2])
        self.restarts: Counter[str] = Counter()
        self.log_offsets: dict[str, int] = {}
        self.kills: list[tuple[str, float]] = []  # (tag, monotonic time of the SIGKILL)

    def _cmd(self, tag: str) -> list[str]:
        venv = self.checkout / ".venv" / "bin"
        if tag == "web":
            return [str(venv / "python"), "-m", "config.serve"]
        if tag == "worker":
            return [
                str(venv / "celery"),
                "-A",
                "celery_app",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(self.concurrency),
                "--hostname",
                f"faults-{self.name}@%h",
            ]
        return [
            str(venv / "celery"),
            "-A",
            "celery_app",
            "beat",
            "--loglevel",
            "INFO",
            "--pidfile",
            str(self.logdir / f"{self.name}-beat.pid"),
        ]

    def spawn(self, tag: str) -> None:
        path = self.logdir / f"{self.name}-{tag}.log"
        self.log_offsets[tag] = path.stat().st_size if path.exists() else 0
        log_file = open(path, "ab")  # noqa: SIM115 (the process holds it)
        self.procs[tag] = subprocess.Popen(
            self._cmd(tag), env=self.env, cwd=self.checkout, stdout=log_file, stderr=log_file, start_new_session=True
        )

    def start(self) -> None:
        for tag in ("web", "worker", "beat"):
            self.spawn(tag)
        self.wait_web(90)
        self.wait_worker(90)

    def wait_web(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        session = loadgen.Session(f"http://{HOST}:{self.web_port}", timeout=2)
        while time.monotonic() < deadline:
            try:
                status, _, _ = session.request("GET", "/xqueue/status/")
                if status == 200:
                    session.close()
                    return
            except (loadgen.HTTPError, OSError):
                pass
            if self.procs["web"].poll() is not None:
                raise RuntimeError(f"the web exited; see {self.logdir}")
            time.sleep(0.2)
        raise RuntimeError("the web did not answer")

    def wait_worker(self, timeout: float) -> None:
        """Until the current worker process says it is ready (consuming)."""
        deadline = time.monotonic() + timeout
        path = self.logdir / f"{self.name}-worker.log"
        while time.monotonic() < deadline:
            with open(path, "rb") as fh:
                fh.seek(self.log_offsets["worker"])
                if b" ready." in fh.read():
                    return
            if self.procs["worker"].poll() is not None:
                raise RuntimeError(f"the worker exited; see {path}")
            time.sleep(0.3)
        raise RuntimeError("the worker did not get ready")

    def kill(self, tag: str) -> None:
        """SIGKILL the process and everything it started (a container or machine dying)."""
        proc = self.procs[tag]
        self.kills.append((tag, time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, tag: str) -> None:
        self.kill(tag)
        self.restarts[tag] += 1
        self.spawn(tag)

    def kill_pool_process(self) -> bool:
        """SIGKILL one of the worker's pool processes; the worker replaces it."""
        pid = self.procs["worker"].pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return False
        if not children:
            return False
        self.kills.append(("pool", time.monotonic()))
        try:
            os.kill(int(random.choice(children)), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for tag, proc in self.procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(tag)


# --- traffic -------------------------------------------------------------------------------------------


class Traffic:
    """The LMS submitting over HTTP at a fixed rate, and watcher-like graders pulling and answering."""

    def __init__(self, base_url: str, lms_port: int, count: int, rate: float, max_requests: int) -> None:
        self.base_url, self.lms_port, self.count, self.rate = base_url, lms_port, count, rate
        self.max_requests = max_requests
        self.accepted: dict[str, float] = {}
        self.status: Counter[str] = Counter()  # "<endpoint> <HTTP status>"
        self.errors: Counter[str] = Counter()  # client-side: timeouts, refused connections, odd replies
        self.handed: Counter[str] = Counter()
        self.silent_until = 0.0  # graders take submissions and never answer before this time
        self.dropped = 0
        self.requests = 0
        self.stop = threading.Event()
        self.submitting_done = threading.Event()
        self.lock = threading.Lock()

    def _note(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.status[f"{endpoint} {status}"] += 1
            self.requests += 1

    def _error(self, what: str) -> None:
        with self.lock:
            self.errors[what] += 1
            self.requests += 1

    def _login(self, session: loadgen.Session, username: str) -> bool:
        try:
            if session.login(username, PASSWORD):
                return True
        except (loadgen.HTTPError, OSError) as exc:
            self._error(f"login {type(exc).__name__}")
            return False
        self._error("login refused")
        return False

    def submit_all(self) -> None:
        session = self.sessions["lms"]
        start = time.monotonic()
        for n in range(self.count):
            pause = start + n / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            number = str(n)
            header = json.dumps(
                {"lms_callback_url": f"http://{HOST}:{self.lms_port}/cb/{number}", "lms_key": f"key-{n}"}
                | {"queue_name": "bench"}
            )
            form = {"xqueue_header": header, "xqueue_body": loadgen.lms_body(number)}
            for _ in range(2):
                try:
                    status, data, _ = session.request("POST", "/xqueue/submit/", form)
                except (loadgen.HTTPError, OSError) as exc:
                    self._error(f"submit {type(exc).__name__}")
                    break
                self._note("submit", status)
                if status == 302:
                    self._login(session, "lms")
                    continue
                if status >= 500:
                    break
                try:
                    if status == 200 and json.loads(data)["return_code"] == 0:
                        self.accepted[number] = time.monotonic()
                    else:
                        self._error("submit refused")
                except (ValueError, KeyError, TypeError):
                    self._error("submit not JSON")
                break
            else:
                self._error("submit redirected to the login page twice")
        self.submitting_done.set()

    def grader(self, index: int) -> None:
        username = f"grader{index}"
        session = self.sessions[username]
        path = "/xqueue/get_submission/?queue_name=bench&block=true"
        logged_in = True
        while not self.stop.is_set() and self.requests < self.max_requests:
            try:
                if not logged_in:
                    logged_in = self._login(session, username)
                    if not logged_in:
                        self.stop.wait(1.0)
                        continue
                status, data, _ = session.request("GET", path)
            except (loadgen.HTTPError, OSError) as exc:
                self._error(f"get_submission {type(exc).__name__}")
                self.stop.wait(1.0)
                continue
            self._note("get_submission", status)
            if status in (301, 302):
                logged_in = False
                continue
            if status >= 500:
                self.stop.wait(1.0)
                continue
            try:
                reply = json.loads(data)
                if reply["return_code"] != 0:
                    self.stop.wait(1.0)  # the watcher sleeps after an empty queue (or any failure)
                    continue
                content = json.loads(reply["content"])
                header, body = content["xqueue_header"], content["xqueue_body"]
            except (ValueError, KeyError, TypeError):
                self._error("get_submission not the envelope")
                self.stop.wait(1.0)
                continue
            number = loadgen.bench_number(body)
            with self.lock:
                self.handed[number] += 1
            if time.monotonic() < self.silent_until:
                with self.lock:
                    self.dropped += 1
                continue
            try:
                status, data, _ = session.request(
                    "POST", "/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": loadgen.GRADE}
                )
            except (loadgen.HTTPError, OSError) as exc:
                self._error(f"put_result {type(exc).__name__}")  # never retried, as xqueue-watcher
                continue
            self._note("put_result", status)
            if status in (301, 302):
                logged_in = False

    def log_in(self) -> None:
        """Log every client in before the clock starts, as they would have been long before a fault."""
        # The Open edX LMS gives XQueue 5 s, logs in again on a redirect to the login page, and never resends;
        # xqueue-watcher gives every request 1 s.
        self.sessions = {"lms": loadgen.Session(self.base_url, timeout=5.0)}
        self.sessions |= {
            f"grader{i}": loadgen.Session(self.base_url, timeout=loadgen.WATCHER_TIMEOUT) for i in range(1, GRADERS + 1)
        }
        for username, session in self.sessions.items():
            for _ in range(10):
                if self._login(session, username):
                    break
                time.sleep(1.0)
            else:
                raise RuntimeError(f"{username} could not log in")
        self.errors.clear()
        self.requests = 0

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.submit_all, daemon=True)]
        threads += [threading.Thread(target=self.grader, args=(i,), daemon=True) for i in range(1, GRADERS + 1)]
        for thread in threads:
            thread.start()
        return threads

    def five_xx(self) -> int:
        with self.lock:
            return sum(c for k, c in self.status.items() if k.rsplit(" ", 1)[1].startswith("5"))


# --- scenarios -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a fault function gets: the processes, services, LMS and traffic of the scenario."""

    scenario: Scenario
    gq: Gradequeue
    services: Services
    lms: LMS
    traffic: Traffic
    db: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    name: str
    what: str
    fault: Callable[[Run], None]
    count: int = 300
    span: float = 20.0  # the LMS spreads its submissions evenly over this many seconds
    fault_at: float = 5.0  # seconds after the traffic starts
    concurrency: int = 2  # the worker's (Celery's default on this 2-core machine)
    env: dict[str, str] = field(default_factory=dict)
    latency: tuple[float, float] = LMS_LATENCY
    drain: float = 120.0  # at most this long after the fault and the traffic have ended

    @property
    def rate(self) -> float:
        return self.count / self.span


def every(seconds: float, duration: float, action: Callable[[], None]) -> int:
    """Do ``action`` every ``seconds`` for ``duration``; how many times it was done."""
    done, start = 0, time.monotonic()
    while time.monotonic() - start < duration:
        action()
        done += 1
        time.sleep(max(0.0, start + done * seconds - time.monotonic()))
    return done


def kill_window(run: Run) -> float:
    """Kills go on while the LMS submits (at least 20 s)."""
    return max(20.0, run.scenario.span - run.scenario.fault_at)


def worker_kill(run: Run) -> None:
    # Each worker is killed at a random moment within 5 s of being ready, and restarted at once, as a
    # supervisor would. A fixed 5 s clock would measure a worker that is never up (it takes longer than that
    # to start on this machine), and a kill 5 s after each start would always find it idle again after the
    # catch-up that follows a restart, which is when it has most grades in flight.
    rng = random.Random(16)
    start, kills, boot = time.monotonic(), 0, []
    while time.monotonic() - start < kill_window(run):
        started = time.monotonic()
        run.gq.wait_worker(60)
        if kills:
            boot.append(time.monotonic() - started)
        time.sleep(rng.uniform(0.0, 5.0))
        run.gq.restart("worker")
        kills += 1
    starts = f"{min(boot, default=0):.1f}-{max(boot, default=0):.1f} s"
    run.notes.append(f"{kills} worker SIGKILLs, each 0-5 s after the worker was ready (restarts took {starts})")


def pool_kill(run: Run) -> None:
    kills: list[bool] = []
    every(5.0, kill_window(run), lambda: kills.append(run.gq.kill_pool_process()))
    run.notes.append(f"{sum(kills)} pool-process SIGKILLs, 5 s apart")


def broker_stop(run: Run) -> None:
    run.services.rabbitmqctl("stop_app")
    time.sleep(40.0)
    run.services.rabbitmqctl("start_app")
    run.notes.append("RabbitMQ stopped 40 s")


def pg_restart(run: Run) -> None:
    started = time.monotonic()
    run.services.restart_pg()
    run.notes.append(f"pg_ctl restart -m fast took {time.monotonic() - started:.1f} s")


def lms_outage(mode: str, seconds: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        run.lms.set_mode(mode)
        time.sleep(seconds)
        run.lms.set_mode("ok", run.scenario.latency)
        run.notes.append(f"LMS {mode} {seconds:.0f} s")

    return fault


def lms_slow(run: Run) -> None:
    # The whole burst meets the slow LMS; the fault ends when the last submission is accepted.
    run.traffic.submitting_done.wait()
    run.notes.append(f"LMS 4.5-4.9 s, delivery timeout 5 s, burst of {run.scenario.count}, worker concurrency 4")


def lms_down_past_horizon(run: Run) -> None:
    run.lms.set_mode("refuse")
    time.sleep(45.0)
    run.lms.set_mode("ok", run.scenario.latency)
    # The operator's "Redeliver" admin action, for every dead letter, through the lifecycle.
    script = (
        "from grading import lifecycle\n"
        "from grading.models import Submission\n"
        "ids = list(Submission.objects.filter(status='dead_letter').values_list('pk', flat=True))\n"
        "print(sum(bool(lifecycle.redeliver(i, actor='user:operator')) for i in ids), len(ids))\n"
    )
    out = subprocess.run(
        [str(run.gq.checkout / ".venv" / "bin" / "python"), "manage.py", "shell", "-c", script],
        env=run.gq.env,
        cwd=run.gq.checkout,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    counts = (out.stdout.strip().splitlines() or ["?"])[-1]
    run.notes.append(f"LMS refusing 45 s, horizon 20 s; operator redelivered (done, dead letters): {counts}")


def beat_kill(run: Run) -> None:
    run.gq.kill("beat")
    time.sleep(30.0)
    run.gq.spawn("beat")
    run.notes.append("beat SIGKILLed, back after 30 s")


def web_kill(run: Run) -> None:
    run.gq.kill("web")
    time.sleep(2.0)
    run.gq.spawn("web")
    run.gq.wait_web(60)
    run.notes.append("web SIGKILLed, restarted after 2 s")


def graders_silent(run: Run) -> None:
    run.traffic.silent_until = time.monotonic() + 10.0
    time.sleep(10.0)
    run.notes.append(f"graders took {run.traffic.dropped} submissions in 10 s and never answered (lease 20 s)")


def redis_down(run: Run) -> None:
    run.services.stop_redis()
    time.sleep(20.0)
    run.services.start_redis()
    run.notes.append("Redis (cache) down 20 s")


SCENARIOS = [
    # Each scenario's traffic lasts until a few seconds after its fault has ended (span).
    Scenario("worker-kill", "worker SIGKILL 0-5 s after each start", worker_kill, span=30.0, fault_at=0.0),
    Scenario("pool-kill", "pool process SIGKILL every 5 s", pool_kill, span=30.0, fault_at=3.0),
    Scenario("broker-stop", "broker stopped 40 s", broker_stop, span=50.0),
    Scenario("pg-restart", "PostgreSQL restarted", pg_restart, span=20.0, fault_at=8.0),
    Scenario("lms-refuse", "LMS refusing 30 s", lms_outage("refuse", 30.0), span=40.0),
    Scenario("lms-503", "LMS answering 503 for 30 s", lms_outage("503", 30.0), span=40.0),
    Scenario(
        "lms-slow",
        "LMS slow (4.5-4.9 s; timeout 5 s), burst",
        lms_slow,
        span=2.0,
        fault_at=0.0,
        concurrency=4,
        env={"GRADEQUEUE_DELIVERY_TIMEOUT": "5"},
        latency=(4.5, 4.9),
        drain=180.0,
    ),
    Scenario(
        "lms-down-horizon",
        "LMS down 45 s, horizon 20 s",
        lms_down_past_horizon,
        span=55.0,
        env={"GRADEQUEUE_DELIVERY_HORIZON": "20"},
    ),
    Scenario("beat-kill", "beat killed 30 s", beat_kill, span=40.0),
    Scenario("web-kill", "web SIGKILL, restarted", web_kill, span=20.0, fault_at=8.0),
    Scenario("graders-silent", "graders never answer 10 s", graders_silent, span=20.0),
    Scenario("redis-down", "Redis (cache) down 20 s", redis_down, span=35.0, fault_at=8.0),
]


def gq_env(services: Services, db: str, web_port: int, scenario: Scenario, checkout: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")}
    return {
        **keep,
        "HOME": str(services.tmp),
        "DATABASE_URL": f"{services.pg_url}/{db}",
        "CELERY_BROKER_URL": services.broker_url,
        "CACHE_URL": services.cache_url,
        "DJANGO_SECRET_KEY": "fault-campaign-only-secret-key-not-for-deployment",
        "GRADEQUEUE_CELERY_QUEUE": f"faults-{scenario.name}",
        "GRADEQUEUE_CALLBACK_HOSTS": HOST,
        "GRADEQUEUE_DEV": "0",
        # Short leases, so that a lost lease comes back within the scenario (production's default is 300 s).
        "GRADEQUEUE_LEASE_SECONDS": "20",
        "GRADEQUEUE_VAR_DIR": str(services.tmp / "var" / scenario.name),
        "LOG_LEVEL": "INFO",
        "WEB_BIND": f"{HOST}:{web_port}",
        "PYTHONPATH": str(checkout),
        **scenario.env,
    }


def run_scenario(
    scenario: Scenario, services: Services, checkout: Path, template: str, web_port: int
) -> dict[str, Any]:
    db = f"faults_{scenario.name.replace('-', '_')}"
    services.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    services.psql(f'CREATE DATABASE "{db}" TEMPLATE "{template}"')
    services.flush_redis()
    lms_port = free_port()
    lms = LMS(lms_port)
    lms.set_mode("ok", scenario.latency)
    env = gq_env(services, db, web_port, scenario, checkout)
    gq = Gradequeue(checkout, env, services.tmp, scenario.name, scenario.concurrency)
    log(f"{scenario.name}: starting web, worker and beat")
    try:
        return _run(scenario, services, gq, lms, db, lms_port, web_port)
    finally:
        gq.stop()
        lms.stop()


def _run(
    scenario: Scenario, services: Services, gq: Gradequeue, lms: LMS, db: str, lms_port: int, web_port: int
) -> dict[str, Any]:
    gq.start()
    traffic = Traffic(f"http://{HOST}:{web_port}", lms_port, scenario.count, scenario.rate, scenario.count * 60)
    traffic.log_in()
    run = Run(scenario, gq, services, lms, traffic, db)
    log(f"{scenario.name}: traffic ({scenario.count} at {scenario.rate}/s), fault at {scenario.fault_at} s")
    t0 = time.monotonic()
    threads = traffic.start()
    time.sleep(scenario.fault_at)
    fault_start = time.monotonic()
    try:
        scenario.fault(run)
    except Exception as exc:  # the row says so; the campaign goes on with the next scenario
        run.notes.append(f"fault failed: {type(exc).__name__}: {exc}")
    fault_end = time.monotonic()
    traffic.submitting_done.wait(timeout=scenario.count / scenario.rate + 60)
    deadline = max(fault_end, time.monotonic()) + scenario.drain
    settled = False
    while time.monotonic() < deadline:
        first = lms.first_arrivals()
        if traffic.accepted.keys() <= first.keys() and time.monotonic() - lms.last_post > QUIET_SECONDS:
            try:
                waiting = services.psql(
                    "SELECT count(*) FROM grading_submission WHERE status NOT IN ("
                    + ", ".join(f"'{s}'" for s in SETTLED)
                    + ")",
                    db,
                )
            except (subprocess.SubprocessError, OSError):
                waiting = "?"
            if waiting == "0":
                settled = True
                break
        time.sleep(0.5)
    traffic.stop.set()
    for thread in threads:
        thread.join(timeout=10)
    gq.stop()
    try:
        statuses = dict(
            line.split("|")
            for line in services.psql("SELECT status, count(*) FROM grading_submission GROUP BY status", db).split()
        )
    except (subprocess.SubprocessError, OSError) as exc:
        statuses = {"error": str(exc)}

    accepted = set(traffic.accepted)
    with lms.lock:
        received = {n: list(ts) for n, ts in lms.received.items()}
    dup_keys = [lms.keys[n] for n in accepted if len(received.get(n, [])) > 1]
    with lms.lock:
        posts = list(lms.posts)
    windows, repeats = repeat_windows(posts, gq.kills, accepted)
    timelines = delivery_timelines(services, db, sorted({r["number"] for r in repeats}, key=int)[:200])
    for line in repeats:
        line["timeline"] = timelines.get(line["number"], "")
    report = {
        "scenario": scenario.name,
        "what": scenario.what,
        "sent": scenario.count,
        **tally(traffic.accepted, received, fault_end),
        "http_5xx": traffic.five_xx(),
        "settled": settled,
        "fault_start_s": round(fault_start - t0, 1),
        "fault_s": round(fault_end - fault_start, 1),
        "notices": len(lms.notices & accepted),
        "status_counts": dict(traffic.status),
        "client_errors": dict(traffic.errors),
        "handed_more_than_once": sum(1 for c in traffic.handed.values() if c > 1),
        "lms_refused_posts": lms.refused_posts,
        "lms_answered_503": lms.answered_503,
        "idempotency_keys_sent": sum(1 for ks in lms.keys.values() for k in ks if k),
        "duplicates_with_repeated_key": sum(1 for ks in dup_keys if ks[0] and len(set(ks)) < len(ks)),
        "repeat_windows": dict(windows),
        "repeats": repeats,
        "kills_s": [(tag, round(t - t0, 2)) for tag, t in gq.kills],
        "db_statuses": statuses,
        "restarts": dict(gq.restarts),
        "notes": run.notes,
    }
    log(f"{scenario.name}: {json.dumps({k: report[k] for k in ('accepted', 'duplicates', 'lost', 'http_5xx')})}")
    return report


def tally(accepted: dict[str, float], received: dict[str, list[float]], fault_end: float) -> dict[str, Any]:
    """A row's counts. ``accepted``: when each accepted submission was accepted; ``received``: each time its
    grade reached the LMS (any submission, accepted or not); ``fault_end``: when the fault ended (one clock)."""
    counts = {n: len(received.get(n, [])) for n in accepted}
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    lost = sorted((n for n, c in counts.items() if c == 0), key=lambda n: (len(n), n))
    recover = None
    if not lost:
        # The last grade owed when the fault ended (accepted by then) to reach the LMS, its first time.
        owed = [min(received[n]) - fault_end for n, t in accepted.items() if t <= fault_end]
        recover = round(max([*owed, 0.0]), 1)
    return {
        "accepted": len(accepted),
        "delivered_once": sum(1 for c in counts.values() if c == 1),
        "duplicates": duplicates,
        "duplicates_per_1000": round(1000.0 * duplicates / max(len(accepted), 1), 1),
        "lost": len(lost),
        "lost_numbers": lost[:20],
        "recover_s": recover,
    }


def delivery_timelines(services: Services, db: str, numbers: list[str]) -> dict[str, str]:
    """The delivery events of these submissions (by the LMS's number): "reason:attempt@time" each."""
    if not numbers:
        return {}
    sql = (
        "SELECT regexp_replace(s.lms_callback_url, '.*/cb/', ''), string_agg(e.reason || ':' "
        "|| coalesce(e.details->>'attempt', '') || '@' || to_char(e.created_at, 'HH24:MI:SS.MS'), ' ' "
        "ORDER BY e.id) FROM grading_submission s JOIN grading_submissionevent e ON e.submission_id = s.id "
        f"WHERE s.lms_callback_url ~ '/cb/({'|'.join(numbers)})$' AND e.created_at >= s.graded_at GROUP BY 1"
    )
    try:
        return dict(line.split("|", 1) for line in services.psql(sql, db).splitlines() if "|" in line)
    except (subprocess.SubprocessError, OSError):
        return {}


# A POST whose answer came back this long before a kill, yet was sent again, was answered but not recorded.
RECORD_WINDOW = 5.0
# On a loaded machine the LMS's thread may take a request in this long after it was sent: a POST that arrives
# this soon after a kill was sent by the killed worker (a new one takes longer than that to start).
SENT_BEFORE = 1.0


def repeat_windows(
    posts: list[tuple[str, str, float, float, float | None]], kills: list[tuple[str, float]], accepted: set[str]
) -> tuple[Counter[str], list[dict[str, Any]]]:
    """Why each grade the LMS took in was sent again: the window the POST before each repeat fell in.

    ``at_lms``: a worker or pool process was killed while that POST was at the LMS (it had been sent, up to
    SENT_BEFORE s before the LMS took it in, and its answer had not yet gone out): HTTP cannot tell the
    sender the grade was taken. ``answered``: the kill came after the LMS had answered (within RECORD_WINDOW
    s): the answer was not recorded in time. ``no_kill``: no kill near it: gradequeue sent the grade again on
    its own. Returns the counts and one line per repeat (times in seconds, relative to the POST's arrival)."""
    by_number: dict[str, list[tuple[str, float, float, float | None]]] = {}
    for number, key, arrived, taken, answered in posts:
        if number in accepted:
            by_number.setdefault(number, []).append((key, arrived, taken, answered))
    moments = sorted(t for _tag, t in kills)
    counts: Counter[str] = Counter()
    lines: list[dict[str, Any]] = []
    for number, seen in sorted(by_number.items(), key=lambda item: int(item[0])):
        seen.sort(key=lambda post: post[1])
        for (key, arrived, taken, answered), following in itertools.pairwise(seen):
            out = answered if answered is not None else taken
            near = [k for k in moments if arrived - SENT_BEFORE <= k <= out + RECORD_WINDOW]
            if any(k <= out for k in near):
                window = "at_lms"
            elif near:
                window = "answered"
            else:
                window = "no_kill"
            counts[window] += 1
            lines.append(
                {
                    "number": number,
                    "window": window,
                    "kill_after_s": round(near[0] - arrived, 3) if near else None,
                    "answered_after_s": None if answered is None else round(answered - arrived, 3),
                    "again_after_s": round(following[1] - arrived, 1),
                    "same_key": key == following[0],
                    "arrived_at": datetime.fromtimestamp(time.time() - time.monotonic() + arrived, UTC).strftime(
                        "%H:%M:%S.%f"
                    )[:-3],
                }
            )
    return counts, lines


def table(reports: list[dict[str, Any]], label: str) -> str:
    head = ("scenario", "accepted", "delivered once", "duplicates", "lost", "5xx", "recover s")
    rows = [
        (
            r["what"],
            f"{r['accepted']}/{r['sent']}",
            str(r["delivered_once"]),
            str(r["duplicates"]),
            str(r["lost"]),
            str(r["http_5xx"]),
            "-" if r["recover_s"] is None else f"{r['recover_s']:.1f}",
        )
        for r in reports
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [f"{label}:", "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_template(services: Services, checkout: Path, web_port: int) -> str:
    template = "faults_template"
    services.psql(f'CREATE DATABASE "{template}"')
    env = gq_env(services, template, web_port, SCENARIOS[0], checkout)
    subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), str(checkout / "bench" / "gq_setup.py"), str(GRADERS), "0", "9"],
        env=env,
        cwd=checkout,
        check=True,
        capture_output=True,
    )
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=BENCH.parent, help="the gradequeue checkout to run")
    parser.add_argument("--label", default="run", help="names the results file and the table")
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--count", type=int, help="submissions per scenario (default: each scenario's own)")
    parser.add_argument("--span", type=float, help="seconds over which they are sent (default: each scenario's)")
    parser.add_argument("--web-port", type=int, default=18180)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if not (checkout / ".venv" / "bin" / "python").exists():
        parser.error(f"{checkout} has no .venv: run `make install` there first")
    chosen = SCENARIOS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {s.name for s in SCENARIOS}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        chosen = [s for s in SCENARIOS if s.name in names]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            sock.bind((HOST, args.web_port))
        except OSError:
            parser.error(f"port {args.web_port} is in use")
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    out_path = results / f"faults-{datetime.now(UTC):%Y%m%d-%H%M%S}-{args.label}.jsonl"
    # SIGTERM unwinds like Ctrl-C, so that every process this script started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    tmp = Path(tempfile.mkdtemp(prefix="gq-faults-"))
    os.chmod(tmp, 0o755)
    services = Services(tmp)
    reports: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        services.start()
        template = make_template(services, checkout, args.web_port)
        for scenario in chosen:
            scenario.count = args.count or scenario.count
            scenario.span = args.span or scenario.span
            report = run_scenario(scenario, services, checkout, template, args.web_port)
            report.update({"label": args.label, "commit": commit})
            reports.append(report)
            with open(out_path, "a") as fh:
                fh.write(json.dumps(report, sort_keys=True) + "\n")
    finally:
        services.stop()
        if args.keep:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(reports, f"{args.label} ({commit}), {time.monotonic() - started:.0f} s"))
    for r in reports:
        print(f"  {r['scenario']}: {'; '.join(r['notes'])}; 5xx {r['http_5xx']}; client errors {r['client_errors']}")
    print(f"results: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
