"""A small real HTTP server standing in for a push-mode HTTP grader (the reference's push protocol)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Push:
    body: bytes
    content_type: str | None
    authorization: str | None


@dataclass
class FakeHTTPGrader:
    """Answers each POST with the next status from ``script`` (then ``default``); 200s carry a grade."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    pushes: list[Push] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @staticmethod
    def grade_for(body: bytes) -> str:
        payload = json.loads(body)
        response = json.loads(payload["xqueue_body"])["student_response"]
        correct = response == "42"
        return json.dumps({"correct": correct, "score": 1.0 if correct else 0.0, "msg": f"<p>{response}</p>"})

    def start(self) -> FakeHTTPGrader:
        grader = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with grader._lock:
                    status = grader.script.pop(0) if grader.script else grader.default
                    grader.pushes.append(
                        Push(body, self.headers.get("Content-Type"), self.headers.get("Authorization"))
                    )
                reply = grader.grade_for(body).encode() if status == 200 else b"Internal error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/grade"
