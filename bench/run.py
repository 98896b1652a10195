#!/usr/bin/env python3
"""Run the side-by-side benchmark: gradequeue, edx-submissions 4.0.2 and two limits, interleaved.

For every repetition, every workload runs each contestant in turn (A, B, C, D, A, B, C, D ...), so that the
machine's drift lands on all of them alike. Each run starts from a fresh copy of a seeded template database
and fresh server processes, and everything listens on 127.0.0.1. Results: one JSON line per run in
bench/results/<stamp>.jsonl, medians and ratios in bench/results/<stamp>.md (also printed).

Usage: run.py [--quick] [--runs N] [--only gradequeue,edx,...] [--workloads drain-2000-g16,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
GQ_VENV = ROOT / ".venv" / "bin"
EDX_VENV = BENCH / ".venv-edx" / "bin"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
# MariaDB (or MySQL) for the "mariadb" contestant: gradequeue itself, on that database instead of PostgreSQL.
MY = os.environ.get("BENCH_MYSQL", "mysql://root@127.0.0.1:3306")
BROKER = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672/gq_bench")
CACHE = os.environ.get("BENCH_CACHE", "redis://127.0.0.1:6379/11")
# The "mariadb" contestant is another deployment: a cache of its own (the next Redis database), or its web
# would find the PostgreSQL deployment's cached accounts under the same ids and refuse every session.
CACHE_MY = os.environ.get(
    "BENCH_CACHE_MARIADB", "{}/{}".format(*CACHE.rsplit("/", 1)[:1], int(CACHE.rsplit("/", 1)[1]) + 1)
)
PREFIX = os.environ.get("BENCH_DB_PREFIX", "gq_bench_")
HOST = "127.0.0.1"
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "28141"))
PORTS = {"gradequeue": PORT_BASE, "mariadb": PORT_BASE, "edx": PORT_BASE + 1, "constant": PORT_BASE + 2}
CALLBACK_PORT = PORT_BASE + 8
MAX_GRADERS = 16


def _schema_tag() -> str:
    """Changes whenever gradequeue gains a migration, so that seeded templates are rebuilt."""
    names = sorted(p.name for p in (ROOT / "grading" / "migrations").glob("0*.py"))
    return hashlib.sha256(" ".join(names).encode()).hexdigest()[:12]


TEMPLATE_VERSION = f"bench-template-v3-{_schema_tag()}"
LABELS = {
    "gradequeue": "gradequeue",
    "mariadb": "gradequeue on MariaDB",
    "edx": "edx-submissions 4.0.2",
    "constant": "constant Django view (limit)",
    "pgloop": "PostgreSQL claim loop (limit)",
}


@dataclass
class Workload:
    name: str
    backlog: int
    graders: int
    contestants: tuple[str, ...]
    stop_after: int = 0  # 0: drain the whole backlog
    time_limit: float = 180.0
    live_rate: float = 0.0
    live_count: int = 0
    extra: list[str] = field(default_factory=list)
    # Settings of gradequeue's processes for this workload (environment variables).
    env: dict[str, str] = field(default_factory=dict)


NO_WAIT = {"GRADEQUEUE_EMPTY_POLL_WAIT": "0"}
# The graders' HTTP as xqueue-watcher does it (requests.Session), instead of the load generator's light client.
REQUESTS = ["--client", "requests"]


def workloads(quick: bool) -> list[Workload]:
    everyone = ("gradequeue", "edx", "constant", "pgloop")
    if quick:
        return [
            Workload("drain-2000-g16", 2000, 16, everyone, time_limit=90),
            Workload("drain-2000-g4", 2000, 4, ("gradequeue", "edx"), time_limit=90),
            Workload("drain-2000-g4-requests", 2000, 4, ("gradequeue", "edx"), time_limit=90, extra=REQUESTS),
            Workload("drain-20000-g16", 20000, 16, ("gradequeue", "edx"), stop_after=2000, time_limit=60),
            Workload("live-10ps-g4", 0, 4, ("gradequeue",), live_rate=10, live_count=150, time_limit=60),
            Workload(
                "live-10ps-g4-nowait", 0, 4, ("gradequeue",), live_rate=10, live_count=150, time_limit=60, env=NO_WAIT
            ),
        ]
    return [
        # Each run is bounded in time: a contestant that has not drained the backlog by then is measured on
        # what it graded (graded/s), and only what it handed out counts towards lost.
        Workload("drain-2000-g1", 2000, 1, everyone, time_limit=60),
        Workload("drain-2000-g4", 2000, 4, everyone, time_limit=60),
        Workload("drain-2000-g16", 2000, 16, (*everyone, "mariadb"), time_limit=60),
        # How cost grows with the backlog: the same 16 graders in front of 100 000 waiting submissions, bounded
        # to the first 3 000 grades (or 60 s).
        Workload(
            "drain-100000-g16", 100000, 16, ("gradequeue", "edx", "pgloop", "mariadb"), stop_after=3000, time_limit=60
        ),
        # The LMS submits 10 a second while 4 graders poll (sleeping 1 s after an empty poll, as the watcher).
        Workload("live-10ps-g4", 0, 4, ("gradequeue",), live_rate=10, live_count=300, time_limit=60),
        # The same two with get_submission answering an empty queue at once (GRADEQUEUE_EMPTY_POLL_WAIT=0)
        # instead of waiting up to 0.5 s for work: what the wait gains, and whether it costs throughput.
        Workload(
            "live-10ps-g4-nowait", 0, 4, ("gradequeue",), live_rate=10, live_count=300, time_limit=60, env=NO_WAIT
        ),
        Workload("drain-2000-g16-nowait", 2000, 16, ("gradequeue",), time_limit=60, env=NO_WAIT),
        # The same drains with the real client's HTTP library: its CPU comes out of the same two cores.
        Workload("drain-2000-g1-requests", 2000, 1, ("gradequeue", "edx"), time_limit=60, extra=REQUESTS),
        Workload("drain-2000-g4-requests", 2000, 4, ("gradequeue", "edx"), time_limit=60, extra=REQUESTS),
        Workload("drain-2000-g16-requests", 2000, 16, ("gradequeue", "edx"), time_limit=60, extra=REQUESTS),
    ]


def psql(sql: str, db: str = "postgres") -> str:
    out = subprocess.run(
        ["psql", f"{PG}/{db}", "-v", "ON_ERROR_STOP=1", "-qtAc", sql], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def db_ready(name: str) -> bool:
    return psql(f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{name}'") == (
        TEMPLATE_VERSION
    )


def recreate(name: str, template: str | None = None) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def template_for(contestant: str, backlog: int, log: Path) -> str:
    """A seeded database to copy for each run, built once per contestant and backlog size."""
    name = f"{PREFIX}tpl_{contestant}_{backlog}"
    if db_ready(name):
        return name
    recreate(name)
    with open(log, "a") as fh:
        if contestant == "gradequeue":
            env = gq_env(name)
            subprocess.run(
                [GQ_VENV / "python", BENCH / "gq_setup.py", str(MAX_GRADERS), str(backlog), str(CALLBACK_PORT)],
                env=env,
                check=True,
                stdout=fh,
                stderr=fh,
            )
        else:
            env = {**os.environ, "EDX_DB_NAME": name, "LOG_LEVEL": "WARNING"}
            subprocess.run(
                [EDX_VENV / "python", "setup_bench.py", str(MAX_GRADERS), str(backlog)],
                cwd=BENCH / "edx_submissions_project",
                env=env,
                check=True,
                stdout=fh,
                stderr=fh,
            )
    psql(f"COMMENT ON DATABASE \"{name}\" IS '{TEMPLATE_VERSION}'")
    return name


def mysql(sql: str, db: str = "") -> str:
    from urllib.parse import urlparse

    url = urlparse(MY)
    cmd = ["mysql", "-h", url.hostname or "127.0.0.1", "-P", str(url.port or 3306), "-u", url.username or "root"]
    env = {**os.environ, "MYSQL_PWD": url.password or ""}
    out = subprocess.run([*cmd, "-N", "-B", "-e", sql, db], check=True, capture_output=True, text=True, env=env)
    return out.stdout.strip()


def mariadb_database(name: str, backlog: int, log: Path) -> None:
    """A fresh gradequeue database on MariaDB for one run: MariaDB has no template databases, so each run
    migrates and seeds its own (outside the measured time)."""
    mysql(f"DROP DATABASE IF EXISTS `{name}`")
    mysql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    with open(log, "a") as fh:
        subprocess.run(
            [GQ_VENV / "python", BENCH / "gq_setup.py", str(MAX_GRADERS), str(backlog), str(CALLBACK_PORT)],
            env=gq_env(name, MY),
            check=True,
            stdout=fh,
            stderr=fh,
        )


def gq_env(db: str, server: str = PG) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"{server}/{db}",
        "CELERY_BROKER_URL": BROKER,
        "CACHE_URL": CACHE if server == PG else CACHE_MY,
        "DJANGO_SECRET_KEY": "benchmark-only-secret-key-not-for-deployment",
        "GRADEQUEUE_CELERY_QUEUE": "gradequeue-bench",
        # The benchmark's LMS listens on the loopback; production settings refuse callbacks anywhere unlisted.
        "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1",
        "GRADEQUEUE_DEV": "0",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "WEB_BIND": f"{HOST}:{PORTS['gradequeue']}",
        "PYTHONPATH": str(ROOT),
    }


def ensure_broker() -> None:
    """Make sure the benchmark's broker answers; create its RabbitMQ vhost on a fresh machine.

    Without this, gradequeue would run with every task publish failing (its sweep covers for that, slowly),
    and the run would measure a pipeline that never scores or delivers.
    """
    from urllib.parse import urlparse

    url = urlparse(BROKER)
    vhost = url.path.lstrip("/") or "/"
    if url.scheme.startswith("amqp") and url.hostname in ("127.0.0.1", "localhost") and vhost != "/":
        listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=False)
        if listed.returncode == 0 and vhost not in listed.stdout.split():
            subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
            subprocess.run(
                ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, url.username or "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
            )
    check = subprocess.run(
        [
            GQ_VENV / "python",
            "-c",
            "import sys, kombu; kombu.Connection(sys.argv[1]).ensure_connection(max_retries=1)",
            BROKER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise RuntimeError(f"the broker {BROKER} does not answer: {check.stderr.strip().splitlines()[-1:]}")


def port_free(port: int) -> None:
    """Refuse to start if something else already listens there: the load would go to someone else's server."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            sock.bind((HOST, port))
        except OSError:
            raise RuntimeError(f"port {port} is already in use; stop what listens there first") from None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[int, float] | None:
    """A process's session id and the CPU seconds (user + system) it has used so far, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After "pid (comm) ": state ppid pgrp session ... utime stime (fields 3, 4, 5, 6 ... 14, 15 of proc(5)).
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(roles: dict[int, str], db: str | None) -> dict[tuple[str, int], float]:
    """CPU seconds so far of each of a contestant's processes, keyed by (role, pid).

    Its own processes are every process in the sessions it started (Granian's workers, Celery's), and its
    database's are the PostgreSQL backends connected to its database (persistent connections, so the
    backends of a run live through it). MariaDB serves every database from one process, shared with anything
    else on the machine: its CPU is left out (``db`` None).
    """
    snapshot: dict[tuple[str, int], float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = proc_cpu(int(entry))
            if got and got[0] in roles:
                snapshot[(roles[got[0]], int(entry))] = got[1]
    if db:
        for pid in psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}'").split():
            got = proc_cpu(int(pid))
            if got:
                snapshot[("database", int(pid))] = got[1]
    return snapshot


def cpu_used(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
    """CPU seconds by role between two snapshots; a process that started in between counts from zero."""
    used: dict[str, float] = {}
    for (role, pid), seconds in after.items():
        used[role] = used.get(role, 0.0) + seconds - before.get((role, pid), 0.0)
    return used


class Contestant:
    """Start a contestant's processes for one run, and stop them all afterwards."""

    def __init__(self, name: str, db: str | None, logdir: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.db, self.logdir = name, db, logdir
        self.env = env or {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roles: dict[int, str] = {}  # session id (the started process's pid) -> web, worker, beat

    def _spawn(self, tag: str, cmd: list[Any], env: dict[str, str], cwd: Path = ROOT) -> None:
        log = open(self.logdir / f"{self.name}-{tag}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proc)
        self.roles[proc.pid] = tag

    def start(self) -> None:
        if self.name in PORTS:
            port_free(PORTS[self.name])
        # Every HTTP contestant is served by gradequeue's own server configuration (config/serve.py).
        serve = ROOT / "config" / "serve.py"
        if self.name in ("gradequeue", "mariadb"):
            assert self.db
            env = {**gq_env(self.db, MY if self.name == "mariadb" else PG), **self.env}
            subprocess.run(
                [GQ_VENV / "celery", "-A", "celery_app", "purge", "-f", "-Q", "gradequeue-bench"],
                env=env,
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
            self._spawn("web", [GQ_VENV / "python", "-m", "config.serve"], env)
            self._spawn(
                "worker",
                [
                    GQ_VENV / "celery",
                    "-A",
                    "celery_app",
                    "worker",
                    "-Q",
                    "gradequeue-bench",
                    "--pool",
                    os.environ.get("BENCH_WORKER_POOL", "threads"),
                    "--concurrency",
                    os.environ.get("BENCH_WORKER_CONCURRENCY", "8"),
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env,
            )
            self._spawn(
                "beat",
                [
                    GQ_VENV / "celery",
                    "-A",
                    "celery_app",
                    "beat",
                    "--loglevel",
                    "WARNING",
                    "--schedule",
                    self.logdir / "beat-schedule",
                ],
                env,
            )
        elif self.name == "edx":
            env = {
                **os.environ,
                "EDX_DB_NAME": self.db or "",
                "WEB_BIND": f"{HOST}:{PORTS['edx']}",
                "WEB_APP": "wsgi:application",
                "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
            }
            self._spawn(
                "web",
                [EDX_VENV / "python", serve],
                env,
                cwd=BENCH / "edx_submissions_project",
            )
        elif self.name == "constant":
            env = {**os.environ, "WEB_BIND": f"{HOST}:{PORTS['constant']}", "WEB_APP": "app:application"}
            self._spawn(
                "web",
                [GQ_VENV / "python", serve],
                env,
                cwd=BENCH / "constant_project",
            )
        if self.name in PORTS:
            self._wait_http(PORTS[self.name])

    def _wait_http(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{HOST}:{port}/xqueue/login/", timeout=2).read()
                return
            except Exception:
                if any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"{self.name} exited; see {self.logdir}") from None
                time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer on port {port}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_one(contestant: str, wl: Workload, rep: int, logdir: Path) -> dict[str, Any]:
    log = logdir / "setup.log"
    if contestant == "pgloop":
        db = f"{PREFIX}run_pgloop"
        recreate(db)
        cmd = [
            GQ_VENV / "python",
            BENCH / "pg_claim_loop.py",
            f"{PG}/{db}",
            "--backlog",
            str(wl.backlog),
            "--graders",
            str(wl.graders),
            "--stop-after",
            str(wl.stop_after or wl.backlog),
            "--time-limit",
            str(wl.time_limit),
            "--label",
            f"{contestant}/{wl.name}/{rep}",
        ]
        server = None
    else:
        db = None
        if contestant in ("gradequeue", "edx"):
            db = f"{PREFIX}run_{contestant}"
            recreate(db, template_for(contestant, wl.backlog, log))
        elif contestant == "mariadb":
            db = f"{PREFIX}run_mariadb"
            mariadb_database(db, wl.backlog, log)
        if contestant in ("gradequeue", "mariadb"):
            # Each run is a new deployment on a database cloned afresh: its cache starts empty too. A cache kept
            # from the run before made later runs' web refuse the graders' sessions (thousands of re-logins).
            redis.Redis.from_url(CACHE if contestant == "gradequeue" else CACHE_MY).flushdb()
        server = Contestant(contestant, db, logdir, wl.env)
        cmd = [
            sys.executable,
            BENCH / "loadgen.py",
            "--base-url",
            f"http://{HOST}:{PORTS[contestant]}",
            "--graders",
            str(wl.graders),
            "--time-limit",
            str(wl.time_limit),
            "--callback-port",
            str(CALLBACK_PORT),
            "--callback-wait",
            "60",
            # Sixteen graders log in at once, each a password hash: on a loaded machine that takes over the
            # default 10 s (logins are outside the measured time).
            "--request-timeout",
            "30",
            "--label",
            f"{contestant}/{wl.name}/{rep}",
        ]
        if wl.live_count:
            cmd += ["--live-rate", str(wl.live_rate), "--live-count", str(wl.live_count)]
        else:
            cmd += ["--expect", str(wl.backlog)]
            if wl.stop_after:
                cmd += ["--stop-after", str(wl.stop_after)]
        if contestant not in ("gradequeue", "mariadb"):
            cmd += ["--no-callbacks"]
        if contestant == "constant":
            cmd += ["--constant"]
        cmd += wl.extra
    lines: list[str] = []
    cpu: dict[str, float] = {}
    pg_db = db if contestant != "mariadb" else None
    try:
        if server:
            server.start()
        with open(logdir / "loadgen.log", "a") as err:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=err, text=True)
            watchdog = threading.Timer(wl.time_limit + 120, proc.kill)
            watchdog.start()
            before: dict[tuple[str, int], float] = {}
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("#ready") and server:
                    # Counted from the moment every grader has logged in (as the load generator's clock).
                    before = cpu_snapshot(server.roles, pg_db)
            # The load generator has waited for the last callback: the servers' work for this run is done.
            if server:
                cpu = cpu_used(before, cpu_snapshot(server.roles, pg_db))
            proc.wait()
            watchdog.cancel()
    finally:
        if server:
            server.stop()
    results = [line for line in lines if line.startswith("{")]
    if not results:
        raise RuntimeError(f"{contestant}/{wl.name}: no result (see {logdir / 'loadgen.log'})")
    report = json.loads(results[-1])
    report.update({"contestant": contestant, "workload": wl.name, "rep": rep})
    graded = report.get("graded") or 0
    if cpu and graded:
        # The contestant's own CPU per grade: its web, worker and beat processes and its database backends.
        report["server_cpu_ms_per_grade"] = {
            role: round(seconds * 1000 / graded, 3) for role, seconds in sorted(cpu.items())
        } | {"total": round(sum(cpu.values()) * 1000 / graded, 3)}
    if db and contestant != "pgloop":
        report["server_db_rows"] = db_summary(contestant, db)
    return report


def db_summary(contestant: str, db: str) -> dict[str, int]:
    """Where the submissions ended up, read from the contestant's own tables after the run."""
    if contestant == "gradequeue":
        rows = psql("SELECT status, count(*) FROM grading_submission GROUP BY status", db)
    elif contestant == "mariadb":
        rows = mysql("SELECT status, count(*) FROM grading_submission GROUP BY status", db).replace("\t", "|")
    else:
        rows = psql("SELECT status, count(*) FROM submissions_externalgraderdetail GROUP BY status", db)
    return {s: int(c) for s, c in (line.split("|") for line in rows.splitlines() if line)}


def median(values: list[Any], digits: int = 1) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), digits) if values else None


def summarise(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | contestant | runs | graded/s | server CPU ms/grade | client CPU ms/grade | callbacks/s | "
        "get_submission p50 / p99 ms | put_result p99 ms | submit→callback p50 / p99 ms | dup | lost | stale | "
        "HTTP err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in reports:
        by.setdefault((r["workload"], r["contestant"]), []).append(r)
    medians: dict[tuple[str, str], float | None] = {}
    for (wl, c), rs in by.items():
        gps = median([r["graded_per_s"] for r in rs])
        medians[(wl, c)] = gps
        s2c = [r.get("submit_to_callback_ms") or {} for r in rs]
        cbs = median([r["callbacks_per_s"] for r in rs if "callbacks_per_s" in r])
        constant = c == "constant"
        cpu = median([r["server_cpu_ms_per_grade"]["total"] for r in rs if "server_cpu_ms_per_grade" in r], 2)
        client = median([r["client_cpu_ms_per_grade"] for r in rs if "client_cpu_ms_per_grade" in r], 2)
        lines.append(
            f"| {wl} | {LABELS[c]} | {len(rs)} | {gps} | {cpu if cpu is not None else '-'} | "
            f"{client if client is not None else '-'} | {cbs if cbs is not None else '-'} | "
            f"{median([r['get_submission_ms']['p50'] for r in rs])} / "
            f"{median([r['get_submission_ms']['p99'] for r in rs])} | "
            f"{median([r['put_result_ms']['p99'] for r in rs])} | "
            + (f"{median([s.get('p50') for s in s2c])} / {median([s.get('p99') for s in s2c])}" if any(s2c) else "-")
            + " | "
            + ("n/a" if constant else str(max(r["duplicates"] for r in rs)))
            + " | "
            + ("n/a" if constant else str(max(r["lost"] for r in rs)))
            + f" | {max(r.get('stale_key_refusals', 0) for r in rs)}"
            + f" | {max(r.get('http_error_count', 0) for r in rs)} |"
        )
    lines += ["", "Ratios of gradequeue's median graded/s:", ""]
    for wl in sorted({w for w, _ in medians}):
        ours = medians.get((wl, "gradequeue"))
        if not ours:
            continue
        parts = [
            f"{LABELS[c]} x{ours / v:.2f}" if c != "constant" and c != "pgloop" else f"{ours / v:.0%} of {LABELS[c]}"
            for (w, c), v in sorted(medians.items())
            if w == wl and c != "gradequeue" and v
        ]
        if parts:
            lines.append(f"- {wl}: " + "; ".join(parts))
    lines += ["", "Server CPU per grade, edx-submissions / gradequeue, per repetition (the same rep's runs):", ""]
    for wl in sorted({w for w, _ in by}):
        ours = {r["rep"]: r for r in by.get((wl, "gradequeue"), []) if "server_cpu_ms_per_grade" in r}
        theirs = {r["rep"]: r for r in by.get((wl, "edx"), []) if "server_cpu_ms_per_grade" in r}
        ratios = [
            theirs[rep]["server_cpu_ms_per_grade"]["total"] / ours[rep]["server_cpu_ms_per_grade"]["total"]
            for rep in sorted(ours.keys() & theirs.keys())
            if ours[rep]["server_cpu_ms_per_grade"]["total"]
        ]
        if ratios:
            split = {
                role: median([r["server_cpu_ms_per_grade"].get(role) for r in ours.values()], 2)
                for role in ("web", "worker", "beat", "database")
            }
            lines.append(
                f"- {wl}: " + ", ".join(f"x{x:.2f}" for x in ratios) + f" (median x{statistics.median(ratios):.2f});"
                " gradequeue's split, ms/grade: " + ", ".join(f"{k} {v}" for k, v in split.items())
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: one repetition, smaller workloads")
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default 3, or 1 with --quick)")
    parser.add_argument("--only", default="", help="comma-separated contestants")
    parser.add_argument("--workloads", default="", help="comma-separated workload names")
    parser.add_argument("--summarise", metavar="JSONL", help="only print the table of an earlier run's results")
    args = parser.parse_args()
    if args.summarise:
        with open(args.summarise) as fh:
            print(summarise([json.loads(line) for line in fh if line.strip()]))
        return 0
    runs = args.runs or (1 if args.quick else 3)
    chosen = workloads(args.quick)
    if args.workloads:
        names = set(args.workloads.split(","))
        chosen = [w for w in chosen if w.name in names]
    only = set(args.only.split(",")) if args.only else set(LABELS)
    if only & {"gradequeue", "mariadb"}:
        ensure_broker()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = BENCH / "results"
    logdir = results / f"{stamp}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    jsonl = results / f"{stamp}.jsonl"
    reports: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(1, runs + 1):
        for wl in chosen:
            for contestant in wl.contestants:
                if contestant not in only:
                    continue
                t0 = time.monotonic()
                try:
                    report = run_one(contestant, wl, rep, logdir)
                except RuntimeError as exc:
                    # One failed run (the load generator gave no result) leaves the other runs standing.
                    print(f"[{time.monotonic() - started:6.0f}s] rep {rep} {wl.name:18} {contestant:10} failed: {exc}")
                    continue
                reports.append(report)
                with open(jsonl, "a") as fh:
                    fh.write(json.dumps(report, sort_keys=True) + "\n")
                print(
                    f"[{time.monotonic() - started:6.0f}s] rep {rep} {wl.name:18} {contestant:10} "
                    f"{report['graded_per_s']:8.1f} graded/s  get p99 {report['get_submission_ms']['p99']} ms  "
                    f"dup {report['duplicates']} lost {report['lost']}  ({time.monotonic() - t0:.0f}s)",
                    flush=True,
                )
    summary = summarise(reports)
    (results / f"{stamp}.md").write_text(summary + "\n")
    print("\n" + summary)
    print(f"\nraw results: {jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
