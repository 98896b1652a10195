"""How long from put_result to the LMS receiving the grade, through a running gradequeue.

Start the service first (``make run``, or the production processes), then::

    .venv/bin/python bench/callback_latency.py --url http://127.0.0.1:18040 -n 200

It submits N answers as the LMS (callbacks to a listener it runs on 127.0.0.1), pulls and answers each as a
grader, and times each grade from the moment put_result returned to the moment the callback arrived.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

arrivals: dict[str, float] = {}
lock = threading.Lock()


class Callback(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        key = json.loads(form["xqueue_header"][0])["lms_key"]
        with lock:
            arrivals.setdefault(key, time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def login(url: str, user: str, password: str) -> requests.Session:
    session = requests.Session()
    reply = session.post(f"{url}/xqueue/login/", data={"username": user, "password": password}, timeout=5).json()
    if reply["return_code"] != 0:
        raise SystemExit(f"login as {user} failed: {reply}")
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:18040")
    parser.add_argument("--queue", default="test-123")
    parser.add_argument("--lms", default="lms:lms-dev-password", help="user:password of an LMS account")
    parser.add_argument("--grader", default="grader:grader-dev-password", help="user:password of a grader account")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    lms = login(args.url, *args.lms.split(":", 1))
    grader = login(args.url, *args.grader.split(":", 1))
    run = f"{time.time():.0f}"
    put_done: dict[str, float] = {}
    for i in range(args.n):
        key = f"{run}-{i}"
        header = {
            "lms_callback_url": f"http://127.0.0.1:{port}/courses/bench/xqueue/{i}/{run}/score_update",
            "lms_key": key,
            "queue_name": args.queue,
        }
        reply = lms.post(
            f"{args.url}/xqueue/submit/",
            data={"xqueue_header": json.dumps(header), "xqueue_body": json.dumps({"n": i})},
            timeout=5,
        ).json()
        assert reply["return_code"] == 0, reply
        pulled = grader.get(f"{args.url}/xqueue/get_submission/", params={"queue_name": args.queue}, timeout=5).json()
        assert pulled["return_code"] == 0, pulled
        content = json.loads(pulled["content"])
        body = json.dumps({"correct": True, "score": 1, "msg": "<p>ok</p>"})
        answer = grader.post(
            f"{args.url}/xqueue/put_result/",
            data={"xqueue_header": content["xqueue_header"], "xqueue_body": body},
            timeout=5,
        )
        put_done[key] = time.monotonic()
        assert answer.json()["return_code"] == 0, answer.text
    deadline = time.monotonic() + 60
    while len(arrivals) < args.n and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies = sorted((arrivals[k] - put_done[k]) * 1000 for k in put_done if k in arrivals)
    lost = args.n - len(latencies)
    result = {
        "submissions": args.n,
        "delivered": len(latencies),
        "lost": lost,
        "put_result_to_callback_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "p90": round(latencies[int(len(latencies) * 0.9) - 1], 1) if latencies else None,
        "p99": round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None,
        "max": round(latencies[-1], 1) if latencies else None,
    }
    print(json.dumps(result))
    server.shutdown()


if __name__ == "__main__":
    main()
