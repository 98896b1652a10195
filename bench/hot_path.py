#!/usr/bin/env python3
"""The cost of a setting or a code change on the hot path: the same server, variants side by side.

Each variant is the production web server (``python -m config.serve``, two workers) with some environment
variables changed, or run from another source tree; the rounds alternate the variants, so that a shared,
noisy machine slows them alike. In each round, GRADERS threads poll an empty queue over kept-alive
connections for SECONDS (get_submission, the call every grader makes several times a second: the session,
the account and the grants from the cache, one SQL statement), and the server's CPU is read from /proc.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gq_bench_hot CACHE_URL=redis://127.0.0.1:6379/3 \\
    python bench/hot_path.py --variant checks-off:DB_CONN_HEALTH_CHECKS=0 --variant checks-on:DB_CONN_HEALTH_CHECKS=1

A variant is ``NAME:VAR=VALUE,VAR=VALUE`` and may name a source tree with ``TREE=/path`` (a checkout of
another commit, to compare before and after a change). Prints requests per second, latency percentiles and
server CPU per request for every round, then each variant's median and its ratio to the first variant.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import HTTPError, Session

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in the process group ``pgid`` (the server and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = (Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env


def start(env_changes: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    tree = Path(env_changes.pop("TREE", str(ROOT)))
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DJANGO_SECRET_KEY": "benchmark-only-secret-key-not-for-deployment",
        "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1",
        "GRADEQUEUE_DEV": "0",
        "GRADEQUEUE_EMPTY_POLL_WAIT": "0",
        "LOG_LEVEL": "WARNING",
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "2",
        **env_changes,
    }
    process = subprocess.Popen([sys.executable, "-m", "config.serve"], cwd=tree, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            session = Session(f"http://127.0.0.1:{port}")
            if session.request("GET", "/xqueue/status/")[0] == 200:
                return process
        except (HTTPError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def poll(port: int, index: int, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    session = Session(f"http://127.0.0.1:{port}")
    if not session.login(f"grader{index}", "bench-password"):
        errors.append("login failed")
        return
    while not stop.is_set():
        started = time.perf_counter()
        status, body, _ = session.request("GET", "/xqueue/get_submission/?queue_name=bench-hot")
        latencies.append(time.perf_counter() - started)
        if status != 200 or b"is empty" not in body:
            errors.append(f"{status} {body[:80]!r}")
    session.close()


def run_round(env_changes: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    process = start(dict(env_changes), args.port)
    try:
        stop = threading.Event()
        latencies: list[float] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=poll, args=(args.port, i + 1, stop, latencies, errors), daemon=True)
            for i in range(args.graders)
        ]
        for t in threads:
            t.start()
        time.sleep(args.warmup)
        warm = len(latencies)
        cpu0, t0 = group_cpu_seconds(process.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu1, t1, done = group_cpu_seconds(process.pid), time.monotonic(), len(latencies)
        stop.set()
        for t in threads:
            t.join(10)
        measured = sorted(latencies[warm:done])
        n = len(measured)
        return {
            "rps": n / (t1 - t0),
            "p50_ms": measured[n // 2] * 1000 if n else float("nan"),
            "p99_ms": measured[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
            "cpu_ms": (cpu1 - cpu0) * 1000 / n if n else float("nan"),
            "errors": len(errors),
            "first_error": errors[0] if errors else "",
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME:VAR=VALUE,... (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--graders", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=18131)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gq_setup.py"), str(args.graders), "0", "9", "bench-hot"],
        check=True,
        env={**os.environ, "DJANGO_SECRET_KEY": "benchmark-only", "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1"},
    )
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    print(f"{'round':>5} {'variant':<16} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} {'errors':>6}")
    for rnd in range(1, args.rounds + 1):
        order = variants if rnd % 2 else variants[::-1]
        for name, env_changes in order:
            r = run_round(env_changes, args)
            results[name].append(r)
            print(
                f"{rnd:>5} {name:<16} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                f"{r['cpu_ms']:>10.3f} {r['errors']:>6} {r['first_error']}",
                flush=True,
            )
    base = variants[0][0]
    base_rps = statistics.median(r["rps"] for r in results[base])
    base_cpu = statistics.median(r["cpu_ms"] for r in results[base])
    print(f"\nmedians over {args.rounds} rounds, ratios to {base}:")
    for name, _ in variants:
        rps = statistics.median(r["rps"] for r in results[name])
        cpu = statistics.median(r["cpu_ms"] for r in results[name])
        p99 = statistics.median(r["p99_ms"] for r in results[name])
        print(
            f"  {name:<16} {rps:>8.0f} req/s (x{rps / base_rps:.3f})  {cpu:.3f} CPU ms/req (x{cpu / base_cpu:.3f})"
            f"  p99 {p99:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
