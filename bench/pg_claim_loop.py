#!/usr/bin/env python3
"""The PostgreSQL limit: G processes claiming and completing rows with nothing but SQL.

Each loop is what a grade needs at the very least: one statement that leases the oldest waiting row with a
fresh key (``FOR UPDATE SKIP LOCKED``), and one that completes it if the key still matches. Two round trips
per grade, like the two HTTP requests of a grader, with no HTTP, no Django and no audit trail. Prints the
same JSON fields as loadgen.py.

Usage: pg_claim_loop.py DSN --backlog N --graders G [--stop-after M] [--time-limit S] [--label L]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import secrets
import sys
import time
from collections import Counter
from typing import Any

import psycopg

SETUP = """
DROP TABLE IF EXISTS bench_claim;
CREATE TABLE bench_claim (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    lease_key text NOT NULL DEFAULT '',
    body text NOT NULL,
    reply text NOT NULL DEFAULT ''
);
CREATE INDEX bench_claim_waiting ON bench_claim (id) WHERE status = 'queued';
"""
CLAIM = """
WITH c AS (SELECT id FROM bench_claim WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE bench_claim AS b SET status = 'pulled', lease_key = %s FROM c WHERE b.id = c.id RETURNING b.id, b.body
"""
COMPLETE = "UPDATE bench_claim SET status = 'done', reply = %s WHERE id = %s AND status = 'pulled' AND lease_key = %s"


def worker(dsn: str, args: argparse.Namespace, total: Any, out: Any) -> None:
    get_lat: list[float] = []
    put_lat: list[float] = []
    handed: list[str] = []
    graded: list[tuple[str, float]] = []
    deadline = time.monotonic() + args.time_limit
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and total.value < args.stop_after:
            key = secrets.token_urlsafe(32)
            t0 = time.monotonic()
            row = conn.execute(CLAIM, (key,)).fetchone()
            t1 = time.monotonic()
            get_lat.append(t1 - t0)
            if row is None:
                break
            handed.append(row[1])
            t2 = time.monotonic()
            done = conn.execute(COMPLETE, ('{"correct": true}', row[0], key)).rowcount
            t3 = time.monotonic()
            put_lat.append(t3 - t2)
            if done == 1:
                graded.append((row[1], t3))
                with total.get_lock():
                    total.value += 1
    out.put({"get_lat": get_lat, "put_lat": put_lat, "handed": handed, "graded": graded})


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))] * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--backlog", type=int, required=True)
    parser.add_argument("--graders", type=int, default=16)
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=120)
    parser.add_argument("--label", default="pg-claim-loop")
    args = parser.parse_args()
    args.stop_after = args.stop_after or args.backlog
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(SETUP)
        conn.execute(
            "INSERT INTO bench_claim (body) SELECT n::text FROM generate_series(0, %s) AS n", (args.backlog - 1,)
        )
        conn.execute("VACUUM ANALYZE bench_claim")
    ctx = mp.get_context("fork")
    total, out = ctx.Value("i", 0), ctx.Queue()
    start = time.monotonic()
    procs = [ctx.Process(target=worker, args=(args.dsn, args, total, out)) for _ in range(args.graders)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    graded = [g for r in results for g in r["graded"]]
    handed = Counter(n for r in results for n in r["handed"])
    get_lat = [x for r in results for x in r["get_lat"]]
    put_lat = [x for r in results for x in r["put_lat"]]
    elapsed = max((t for _, t in graded), default=start) - start
    graded_numbers = {n for n, _ in graded}
    report = {
        "label": args.label,
        "graders": args.graders,
        "expected": args.stop_after,
        "graded": len(graded_numbers),
        "elapsed_s": round(elapsed, 3),
        "graded_per_s": round(len(graded) / max(elapsed, 1e-9), 1),
        "get_submission_ms": {"p50": pct(get_lat, 50), "p95": pct(get_lat, 95), "p99": pct(get_lat, 99)},
        "put_result_ms": {"p50": pct(put_lat, 50), "p95": pct(put_lat, 95), "p99": pct(put_lat, 99)},
        "duplicates": sum(c - 1 for c in handed.values() if c > 1),
        "lost": len(set(handed) - graded_numbers),
        "stale_key_refusals": 0,
        "http_error_count": 0,
    }
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
