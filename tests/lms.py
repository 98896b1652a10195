"""A small real HTTP server standing in for the LMS's grade callback endpoint."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Callback:
    path: str
    header: str
    body: str
    status: int
    received_at: float
    authorization: str = ""
    proxy_authorization: str = ""
    idempotency_key: str = ""

    @property
    def lms_key(self) -> str:
        return str(json.loads(self.header)["lms_key"])


@dataclass
class FakeLMS:
    """Answers each callback with the next status from ``script`` (then ``default``), recording all."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    on_request: Callable[[Callback], None] | None = None
    callbacks: list[Callback] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    port: int = 0
    # Serve HTTPS with this context (a certificate of the test's own), instead of plain HTTP.
    tls: ssl.SSLContext | None = None

    def start(self) -> FakeLMS:
        lms = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                with lms._lock:
                    status = lms.script.pop(0) if lms.script else lms.default
                    cb = Callback(
                        self.path,
                        form.get("xqueue_header", [""])[0],
                        form.get("xqueue_body", [""])[0],
                        status,
                        time.monotonic(),
                        self.headers.get("Authorization", ""),
                        self.headers.get("Proxy-Authorization", ""),
                        self.headers.get("Idempotency-Key", ""),
                    )
                    lms.callbacks.append(cb)
                if lms.on_request:
                    lms.on_request(cb)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.server.daemon_threads = True
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def base_url(self) -> str:
        assert self.port, "start() the server or give it a port first"
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def callback_url(self, student: int = 1, problem: str = "p1") -> str:
        # Shaped like the real LMS's callback, which is often longer than 128 characters.
        return (
            f"{self.base_url}/courses/course-v1:OpenedX+DemoX+2026_T1/xqueue/{student}/"
            f"block-v1:OpenedX+DemoX+2026_T1+type@problem+block@{problem}0123456789abcdef0123456789abcdef/score_update"
        )

    def delivered(self) -> list[Callback]:
        with self._lock:
            return [cb for cb in self.callbacks if cb.status == 200]

    def deliveries_per_key(self) -> dict[str, int]:
        """How many times each ``lms_key`` was answered 200 (a grade the LMS took)."""
        counts: dict[str, int] = {}
        for cb in self.delivered():
            counts[cb.lms_key] = counts.get(cb.lms_key, 0) + 1
        return counts
