#!/usr/bin/env python3
"""What a broker that never answers costs each put_result: the production web server with its broker
pointed at a port that takes connections and never answers (a hung broker, or packets dropped after the
handshake), variants side by side as in bench/hot_path.py (``TREE=/path`` runs another source tree).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gq_bench_hot \\
    python bench/broker_stall.py --variant before:TREE=/path/to/old/checkout --variant after:

For each variant: REPLIES submissions are submitted, pulled and answered one after another; prints each
put_result's time (the first of an outage, then the median and maximum of the rest) and the connections
the broker port received.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hot_path import ROOT, parse_variant, start
from loadgen import Session


class Silent:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--replies", type=int, default=8)
    parser.add_argument("--port", type=int, default=18132)
    args = parser.parse_args()
    setup_env = {**os.environ, "DJANGO_SECRET_KEY": "benchmark-only", "GRADEQUEUE_CALLBACK_HOSTS": "127.0.0.1"}
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gq_setup.py"), "1", "0", "9", "bench-stall"], check=True, env=setup_env
    )
    print(
        f"{'variant':<10} {'first put_result s':>18} {'median of rest s':>16} {'max of rest s':>13} {'connections':>11}"
    )
    for name, env_changes in (parse_variant(v) for v in args.variant):
        broker = Silent()
        env_changes = {**env_changes, "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{broker.port}//"}
        env_changes.setdefault("WEB_WORKERS", "1")
        process = start(env_changes, args.port)
        try:
            base = f"http://127.0.0.1:{args.port}"
            lms, grader = Session(base, timeout=60), Session(base, timeout=60)
            assert lms.login("lms", "bench-password") and grader.login("grader1", "bench-password")
            times = []
            for i in range(args.replies):
                header = {
                    "lms_callback_url": f"http://127.0.0.1:9/cb/{time.time_ns()}",
                    "lms_key": f"k{i}",
                    "queue_name": "bench-stall",
                }
                lms.request("POST", "/xqueue/submit/", {"xqueue_header": json.dumps(header), "xqueue_body": "{}"})
                _, body, _ = grader.request("GET", "/xqueue/get_submission/?queue_name=bench-stall")
                lease = json.loads(json.loads(body)["content"])["xqueue_header"]
                started = time.perf_counter()
                _, body, _ = grader.request(
                    "POST",
                    "/xqueue/put_result/",
                    {"xqueue_header": lease, "xqueue_body": '{"correct": true, "score": 1, "msg": ""}'},
                )
                times.append(time.perf_counter() - started)
                assert json.loads(body)["return_code"] == 0, body
            rest = times[1:]
            median, slowest = statistics.median(rest), max(rest)
            print(f"{name:<10} {times[0]:>18.3f} {median:>16.3f} {slowest:>13.3f} {len(broker.held):>11}", flush=True)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            broker.listener.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
