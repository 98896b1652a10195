#!/usr/bin/env python3
"""A load generator that behaves like xqueue-watcher graders and like the LMS, over real HTTP.

Graders: G processes, each with its own logged-in session (login form POST, cookies replayed, re-login on a
302), looping get_submission -> put_result like xqueue-watcher; when the server offers a ``csrftoken`` cookie
they send ``X-CSRFToken`` and ``Referer`` as 2026 watchers do; after an empty poll they sleep (1 s, as the
watcher does). The LMS: submits over HTTP (``--live-rate`` submissions per second) and listens for grade
callbacks, timing each one's arrival.

Every submission carries its bench number in ``student_response`` (and, for callbacks, in the callback path
``/cb/<n>``), so the run can count duplicates (one number handed out twice, or called back twice) and lost
submissions (expected but never graded, or graded but never called back).

Its HTTP/1.1 client and LMS listener parse with httptools (``Reader``), cheap per request.
Prints a short table and one JSON line; ``--json-out`` appends the JSON line to a file.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

import httptools

WATCHER_TIMEOUT = 1.0  # xqueue-watcher's default request timeout: slower replies are dropped by real clients


class HTTPError(Exception):
    """A reply that is not HTTP/1.x, or a connection closed in the middle of one."""


class Message:
    """One HTTP/1.1 message read from a socket: its method and target (a request) or status (a reply), the
    headers (names in lower case) and the body."""

    __slots__ = ("body", "headers", "keep_alive", "method", "status", "target")

    def __init__(self) -> None:
        self.method, self.target, self.status = "", "", 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.keep_alive = True

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]


class Reader:
    """Reads HTTP messages from one connection with httptools (llhttp, the parser of Node.js).

    httptools rather than h11 or http.client: its C parser keeps the client's CPU per request low, and on this
    benchmark's shared cores every millisecond the client spends is one the server under test does not get
    (BENCHMARKS.md). Messages that arrive together (a pipelining peer) are queued in order.
    """

    def __init__(self, sock: socket.socket, *, request: bool = False) -> None:
        self.sock = sock
        self.request = request
        self.parser = httptools.HttpRequestParser(self) if request else httptools.HttpResponseParser(self)
        self.done: collections.deque[Message] = collections.deque()
        self.current: Message | None = None
        self.chunks: list[bytes] = []
        self.headers_done = False

    # httptools' callbacks, called from inside feed_data.
    def on_message_begin(self) -> None:
        self.current, self.chunks, self.headers_done = Message(), [], False

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1").lower(), value.decode("latin-1").strip()))

    def on_headers_complete(self) -> None:
        message, parser = self.current, self.parser
        assert message is not None
        self.headers_done = True
        if isinstance(parser, httptools.HttpRequestParser):
            message.method = parser.get_method().decode("latin-1")
        else:
            message.status = parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        message = self.current
        assert message is not None
        message.body = b"".join(self.chunks)
        message.keep_alive = self.parser.should_keep_alive()
        self.done.append(message)
        self.current, self.chunks = None, []

    def read(self) -> Message | None:
        """The next message, or None if the peer closed the connection before sending one."""
        while not self.done:
            data = self.sock.recv(65536)
            if not data:
                return self._eof()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise HTTPError(f"not HTTP/1.x: {exc}") from None
        return self.done.popleft()

    def _eof(self) -> Message | None:
        message = self.current
        if message is None:
            return None
        # A reply with neither Content-Length nor chunked encoding ends with the connection.
        framed = message.get("content-length") is not None or message.get("transfer-encoding") is not None
        if self.request or framed or not self.headers_done:
            raise HTTPError("connection closed mid-message")
        message.body, message.keep_alive = b"".join(self.chunks), False
        self.current = None
        return message


class Session:
    """One keep-alive HTTP/1.1 connection with a cookie jar, like a requests.Session but cheaper."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.reader: Reader | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Host": f"{self.host}:{self.port}", "Connection": "keep-alive", "Accept": "*/*"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        token = self.cookies.get("csrftoken") or self.cookies.get("edx-csrftoken")
        if token:
            headers["X-CSRFToken"] = token
            headers["Referer"] = self.base_url
        return headers

    def close(self) -> None:
        if self.reader is not None:
            self.reader.sock.close()
            self.reader = None

    def _exchange(self, request: bytes) -> Message:
        if self.reader is None:
            self.reader = Reader(socket.create_connection((self.host, self.port), timeout=self.timeout))
            self.reader.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader.sock.sendall(request)
        response = self.reader.read()
        if response is None:
            raise HTTPError("connection closed before the reply")
        if not response.keep_alive:
            self.close()
        return response

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes, Message]:
        headers = self.headers()
        body = b""
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if body or method == "POST":
            headers["Content-Length"] = str(len(body))
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = head.encode("latin-1") + b"\r\n" + body
        for attempt in range(2):
            try:
                response = self._exchange(request)
                break
            except (HTTPError, OSError):
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                self.close()
                if attempt:
                    raise
        for cookie in response.get_all("set-cookie"):
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value in ('""', ""):
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        return response.status, response.body, response

    def login(self, username: str, password: str) -> bool:
        self.request("GET", "/xqueue/login/")  # 2026 watchers read the csrftoken cookie here first
        status, data, _ = self.request("POST", "/xqueue/login/", {"username": username, "password": password})
        try:
            return status == 200 and json.loads(data)["return_code"] == 0
        except (ValueError, KeyError, TypeError):
            return False


class RequestsSession:
    """A grader's HTTP the way xqueue-watcher does it: one ``requests.Session``, its login and CSRF handling.

    The real client's cost per request (requests, urllib3 and the email package's header parsing) is several
    times the light Session's; on a shared machine it is taken from the server under test (BENCHMARKS.md).
    Same interface as Session.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    @property
    def cookies(self) -> dict[str, str]:
        return dict(self.session.cookies)

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        # Like the watcher's _request: no redirect followed, a 302 sends it back to login.
        response = self.session.request(
            method, self.base_url + path, data=form, timeout=self.timeout, allow_redirects=False
        )
        return response.status_code, response.content, response

    def login(self, username: str, password: str) -> bool:
        # The watcher's _login: clear the cookies, GET the login page for the csrftoken cookie, POST with
        # X-CSRFToken and Referer, then keep both headers on the session for every later request.
        url = self.base_url + "/xqueue/login/"
        self.session.cookies.clear()
        self.session.headers.pop("X-CSRFToken", None)
        self.session.request("get", url, timeout=self.timeout)
        token = self.session.cookies.get("csrftoken") or self.session.cookies.get("edx-csrftoken")
        headers = {"Referer": url, **({"X-CSRFToken": token} if token else {})}
        response = self.session.request(
            "post", url, timeout=self.timeout, headers=headers, data={"username": username, "password": password}
        )
        if response.status_code != 200:
            return False
        token = self.session.cookies.get("csrftoken") or self.session.cookies.get("edx-csrftoken")
        self.session.headers.update({"Referer": self.base_url})
        if token:
            self.session.headers.update({"X-CSRFToken": token})
        try:
            return bool(response.json()["return_code"] == 0)
        except (ValueError, KeyError, TypeError):
            return False


def bench_number(xqueue_body: str) -> str:
    """The bench number a submission carries in its student_response."""
    try:
        body = json.loads(xqueue_body)
        return str(body.get("student_response", xqueue_body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return xqueue_body


GRADE = json.dumps({"correct": True, "score": 1, "msg": "<p>Good.</p>"})


def grader(index: int, args: argparse.Namespace, graded_total: Any, stop: Any, ready: Any, out: Any) -> None:
    """One xqueue-watcher-like grader process."""
    session: Session | RequestsSession
    if args.client == "requests":
        session = RequestsSession(args.base_url, timeout=args.request_timeout)
    else:
        session = Session(args.base_url, timeout=args.request_timeout)
    stats: dict[str, Any] = {
        "get_lat": [],
        "put_lat": [],
        "handed": [],
        "graded": [],
        "stale": 0,
        "http_errors": Counter(),
        "empty": 0,
        "slow": 0,
        "relogins": 0,
        "other_failures": Counter(),
        "exceptions": 0,
    }
    username = args.user_pattern.format(i=index)
    if not session.login(username, args.password):
        stats["other_failures"]["login failed"] += 1
    # A watcher logs in once when it starts; the clock starts when every grader is logged in (password
    # hashing at login would otherwise weigh on the first seconds of a short run).
    ready.wait()
    cpu_start = time.process_time()
    deadline = time.monotonic() + args.time_limit
    get_path = "/xqueue/get_submission/?" + urllib.parse.urlencode({"queue_name": args.queue, "block": "true"})
    while not stop.is_set() and time.monotonic() < deadline:
        if graded_total.value >= args.target:
            break
        try:
            t0 = time.monotonic()
            status, data, _ = session.request("GET", get_path)
            t1 = time.monotonic()
        except Exception:
            stats["exceptions"] += 1
            time.sleep(0.1)
            continue
        stats["get_lat"].append(t1 - t0)
        if t1 - t0 > WATCHER_TIMEOUT:
            stats["slow"] += 1
        if status in (301, 302):
            stats["relogins"] += 1
            session.login(username, args.password)
            continue
        try:
            reply = json.loads(data)
        except ValueError:
            stats["http_errors"][status] += 1
            time.sleep(0.1)
            continue
        if status != 200:
            stats["http_errors"][status] += 1
        if reply.get("return_code") != 0:
            content = str(reply.get("content", ""))
            if "empty" in content:
                stats["empty"] += 1
                stop.wait(args.empty_sleep)
            else:
                stats["other_failures"][content[:60]] += 1
                stop.wait(args.empty_sleep)
            continue
        try:
            payload = json.loads(reply["content"])
            header, body = payload["xqueue_header"], payload["xqueue_body"]
        except (ValueError, KeyError, TypeError):
            stats["other_failures"]["bad get_submission content"] += 1
            continue
        number = bench_number(body)
        stats["handed"].append(number)
        try:
            t2 = time.monotonic()
            status, data, _ = session.request(
                "POST", "/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": GRADE}
            )
            t3 = time.monotonic()
        except Exception:
            stats["exceptions"] += 1
            continue
        stats["put_lat"].append(t3 - t2)
        if t3 - t2 > WATCHER_TIMEOUT:
            stats["slow"] += 1
        if status in (301, 302):
            stats["relogins"] += 1
            stats["other_failures"]["put_result redirected (result not retried, as the watcher)"] += 1
            session.login(username, args.password)
            continue
        if status != 200:
            stats["http_errors"][status] += 1
        try:
            reply = json.loads(data)
        except ValueError:
            if status == 200:
                stats["http_errors"]["non-JSON"] += 1
            continue
        if reply.get("return_code") == 0:
            stats["graded"].append((number, t3))
            with graded_total.get_lock():
                graded_total.value += 1
        elif "Incorrect key" in str(reply.get("content")):
            stats["stale"] += 1
        else:
            stats["other_failures"][str(reply.get("content"))[:60]] += 1
    stats["cpu"] = time.process_time() - cpu_start
    out.put(stats)


class Callbacks:
    """The LMS's callback endpoint: POST /cb/<n> answers 200 with an empty body, timing each arrival.

    A thread per connection (the worker keeps its connections alive), parsing with ``Reader``.
    """

    def __init__(self, port: int) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        # A real server's listen backlog: a burst of new connections is not dropped (1 s SYN retransmits).
        self.sock = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = Reader(conn, request=True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                message = reader.read()
                if message is None:
                    return
                now = time.monotonic()
                method, target = message.method, message.target
                if method != "POST":
                    conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                else:
                    number = target.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
                    with self.lock:
                        self.arrivals.setdefault(number, []).append(now)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                if not message.keep_alive:
                    return
        except (HTTPError, OSError, ValueError):
            return
        finally:
            conn.close()

    def start(self) -> Callbacks:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.sock.close()


def lms_header(args: argparse.Namespace, number: str) -> str:
    return json.dumps(
        {
            "lms_callback_url": f"http://127.0.0.1:{args.callback_port}/cb/{number}",
            "lms_key": f"key-{number}",
            "queue_name": args.queue,
        }
    )


def lms_body(number: str) -> str:
    return json.dumps(
        {
            "grader_payload": json.dumps({"grader": "bench.py"}),
            "student_info": json.dumps({"anonymous_student_id": "bench", "submission_time": "20261125000000"}),
            "student_response": number,
        }
    )


def live_lms(args: argparse.Namespace, submitted: dict[str, float], errors: Counter, done: threading.Event) -> None:
    """Submit at a fixed rate over HTTP, as the LMS does, recording when each submission was sent."""
    session = Session(args.base_url, timeout=args.request_timeout)
    if not session.login(args.lms_user, args.lms_password):
        errors["lms login failed"] += 1
    interval = 1.0 / args.live_rate
    start = time.monotonic()
    for n in range(args.live_count):
        target = start + n * interval
        pause = target - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        number = f"live-{n}"
        sent = time.monotonic()
        try:
            status, data, _ = session.request(
                "POST", "/xqueue/submit/", {"xqueue_header": lms_header(args, number), "xqueue_body": lms_body(number)}
            )
            ok = status == 200 and json.loads(data).get("return_code") == 0
        except Exception:
            ok = False
        if ok:
            submitted[number] = sent
        else:
            errors["submit failed"] += 1
    done.set()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def timeline(offsets: list[float], step: float) -> list[int]:
    """How many of ``offsets`` (seconds from the start) fall in each ``step`` of the run."""
    counts = [0] * (int(max(offsets, default=0.0) / step) + 1)
    for offset in offsets:
        counts[max(0, int(offset / step))] += 1
    return counts


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    callbacks = Callbacks(args.callback_port).start() if args.callbacks else None
    submitted: dict[str, float] = {}
    lms_errors: Counter = Counter()
    lms_done = threading.Event()
    args.target = args.live_count or args.stop_after or args.expect
    ctx = mp.get_context("fork")
    graded_total = ctx.Value("i", 0)
    stop = ctx.Event()
    out = ctx.Queue()
    ready = ctx.Barrier(args.graders + 1)
    procs = [
        ctx.Process(target=grader, args=(i + 1, args, graded_total, stop, ready, out), daemon=True)
        for i in range(args.graders)
    ]
    for proc in procs:
        proc.start()
    ready.wait(timeout=120)
    start = time.monotonic()
    # Every grader is logged in: whoever measures the servers' CPU (bench/run.py) starts counting here, so
    # that password hashing at login is left out, as it is from the clock.
    print("#ready", flush=True)
    main_cpu_start = time.process_time()  # the LMS side: callback listener, live submissions
    lms_thread = None
    if args.live_count:
        lms_thread = threading.Thread(target=live_lms, args=(args, submitted, lms_errors, lms_done), daemon=True)
        lms_thread.start()
    deadline = start + args.time_limit
    while time.monotonic() < deadline:
        if graded_total.value >= args.target:
            break
        if lms_done.is_set() and graded_total.value >= len(submitted):
            break
        time.sleep(0.05)
    stop.set()
    results = [out.get(timeout=args.time_limit + 30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    graders_cpu = sum(r["cpu"] for r in results)
    if lms_thread is not None:
        lms_thread.join(timeout=10)

    graded: list[tuple[str, float]] = [g for r in results for g in r["graded"]]
    graded_numbers = {n for n, _ in graded}
    end_graded = max((t for _, t in graded), default=start)
    # Callbacks come after the grade: wait (bounded) for every graded submission's callback.
    if callbacks is not None:
        wait_until = time.monotonic() + args.callback_wait
        while time.monotonic() < wait_until:
            with callbacks.lock:
                if graded_numbers <= callbacks.arrivals.keys():
                    break
            time.sleep(0.05)
        callbacks.stop()

    handed = Counter(n for r in results for n in r["handed"])
    if args.live_count:
        expected = set(submitted)
    elif (args.stop_after and args.stop_after < args.expect) or len(graded_numbers) < args.target:
        # A bounded run over a larger backlog, or one stopped by its time limit: whatever was handed out must
        # come back graded (and called back); the rest is still waiting in the queue, not lost.
        expected = set(handed)
    else:
        expected = {str(n) for n in range(args.first, args.first + args.expect)}
    dup_handouts = sum(c - 1 for c in handed.values() if c > 1)
    graded_counts = Counter(n for n, _ in graded)
    dup_grades = sum(c - 1 for c in graded_counts.values() if c > 1)
    http_errors: Counter = Counter()
    other: Counter = Counter()
    for r in results:
        http_errors.update({str(k): v for k, v in r["http_errors"].items()})
        other.update(r["other_failures"])
    other.update(lms_errors)
    get_lat = [x for r in results for x in r["get_lat"]]
    put_lat = [x for r in results for x in r["put_lat"]]
    elapsed = max(end_graded - start, 1e-9)
    report: dict[str, Any] = {
        "label": args.label,
        "graders": args.graders,
        "expected": len(expected),
        "graded": len(graded_numbers & expected),
        "elapsed_s": round(elapsed, 3),
        "graded_per_s": round(len(graded) / elapsed, 1),
        "get_submission_ms": {p: ms(percentile(get_lat, q)) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
        "put_result_ms": {p: ms(percentile(put_lat, q)) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
        "requests": len(get_lat) + len(put_lat),
        "empty_polls": sum(r["empty"] for r in results),
        "dup_handouts": dup_handouts,
        "dup_grades": dup_grades,
        "stale_key_refusals": sum(r["stale"] for r in results),
        "http_errors": dict(http_errors),
        "http_error_count": sum(http_errors.values()),
        "over_1s": sum(r["slow"] for r in results),
        "relogins": sum(r["relogins"] for r in results),
        "client_exceptions": sum(r["exceptions"] for r in results),
        "other_failures": dict(other),
        "lost": len(expected - graded_numbers),
        "completed": len(graded_numbers) >= args.target,
        # Grades accepted in each half second of the run: shows warm-up and the tail.
        "graded_timeline": timeline([t - start for _, t in graded], 0.5),
        "client": args.client,
        # The graders' own CPU per grade (their processes' accounting, after the login): what the client
        # takes from a machine it shares with the server.
        "client_cpu_ms_per_grade": round(
            (graders_cpu + time.process_time() - main_cpu_start) * 1000 / max(len(graded), 1), 3
        ),
    }
    if callbacks is not None:
        arrivals = callbacks.arrivals
        first = {n: min(ts) for n, ts in arrivals.items()}
        dup_callbacks = sum(len(ts) - 1 for ts in arrivals.values() if len(ts) > 1)
        end_cb = max(first.values(), default=start)
        report["callbacks"] = len(first.keys() & expected)
        report["callbacks_per_s"] = round(len(first) / max(end_cb - start, 1e-9), 1)
        report["dup_callbacks"] = dup_callbacks
        # Lost: expected but never graded, or graded but its callback never came.
        report["lost"] = len(expected - (graded_numbers & first.keys()))
        report["duplicates"] = dup_handouts + dup_callbacks
        if submitted:
            lat = [first[n] - submitted[n] for n in submitted if n in first]
            report["submit_to_callback_ms"] = {"p50": ms(percentile(lat, 50)), "p99": ms(percentile(lat, 99))}
    else:
        report["duplicates"] = dup_handouts + dup_grades
    if args.constant:
        # The constant view hands out the same submission every time: nothing to count.
        report.update({"duplicates": 0, "lost": 0, "dup_handouts": 0, "dup_grades": 0, "graded": len(graded)})
    if submitted:
        done_at = {}
        for n, t in graded:
            done_at.setdefault(n, t)
        lat = [done_at[n] - submitted[n] for n in submitted if n in done_at]
        report["submit_to_graded_ms"] = {"p50": ms(percentile(lat, 50)), "p99": ms(percentile(lat, 99))}
        report["live_rate"] = args.live_rate
    return report


def table(report: dict[str, Any]) -> str:
    g, p = report["get_submission_ms"], report["put_result_ms"]
    rows = [
        ("run", report["label"]),
        ("graded", f"{report['graded']}/{report['expected']} in {report['elapsed_s']} s"),
        ("graded/s", report["graded_per_s"]),
        ("callbacks/s", report.get("callbacks_per_s", "-")),
        ("get_submission p50/p95/p99 ms", f"{g['p50']} / {g['p95']} / {g['p99']}"),
        ("put_result p50/p95/p99 ms", f"{p['p50']} / {p['p95']} / {p['p99']}"),
    ]
    if "submit_to_callback_ms" in report:
        s = report["submit_to_callback_ms"]
        rows.append(("submit->callback p50/p99 ms", f"{s['p50']} / {s['p99']}"))
    if "submit_to_graded_ms" in report:
        s = report["submit_to_graded_ms"]
        rows.append(("submit->graded p50/p99 ms", f"{s['p50']} / {s['p99']}"))
    rows += [
        ("duplicates / lost", f"{report['duplicates']} / {report['lost']}"),
        ("stale-key refusals", report["stale_key_refusals"]),
        ("HTTP errors", f"{report['http_error_count']} {report['http_errors'] or ''}".strip()),
        ("replies over 1 s", report["over_1s"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--queue", default="bench")
    parser.add_argument("--graders", type=int, default=4)
    parser.add_argument("--user-pattern", default="grader{i}", help="grader account name; {i} is 1..G")
    parser.add_argument("--password", default="bench-password")
    parser.add_argument("--expect", type=int, default=0, help="drain mode: backlog size to grade")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="drain mode: stop after this many grades (a bounded run over a larger backlog)",
    )
    parser.add_argument("--constant", action="store_true", help="the constant-view limit: skip duplicate counting")
    parser.add_argument("--first", type=int, default=0, help="drain mode: the backlog's first bench number")
    parser.add_argument("--live-rate", type=float, default=0.0, help="live mode: LMS submissions per second")
    parser.add_argument("--live-count", type=int, default=0, help="live mode: how many submissions to send")
    parser.add_argument("--lms-user", default="lms")
    parser.add_argument("--lms-password", default="bench-password")
    parser.add_argument("--callback-port", type=int, default=28149)
    parser.add_argument(
        "--no-callbacks",
        dest="callbacks",
        action="store_false",
        help="the contestant has no LMS callback (edx-submissions emits a signal instead)",
    )
    parser.add_argument("--callback-wait", type=float, default=30.0)
    parser.add_argument("--empty-sleep", type=float, default=1.0, help="the watcher's sleep after an empty poll")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument(
        "--client",
        choices=("light", "requests"),
        default="light",
        help="the graders' HTTP: the light HTTP/1.1 client, or requests.Session as xqueue-watcher uses it",
    )
    parser.add_argument("--time-limit", type=float, default=300.0, help="hard bound on the run's length")
    parser.add_argument("--label", default="run")
    parser.add_argument("--json-out", help="append the JSON line to this file")
    args = parser.parse_args(argv)
    if not args.expect and not args.live_count:
        parser.error("give --expect (drain a backlog) or --live-count with --live-rate (live mode)")
    if args.live_count and args.live_rate <= 0:
        parser.error("--live-count needs --live-rate")
    report = run(args)
    print(table(report), file=sys.stderr)
    line = json.dumps(report, sort_keys=True)
    print(line)
    if args.json_out:
        with open(args.json_out, "a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
