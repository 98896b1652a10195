"""gradequeue's web server: Granian serving the WSGI application (``python -m config.serve``).

Why Granian, and why these values, measured with ``make bench`` on a 2-core machine (BENCHMARKS.md):

- Granian's HTTP layer is Rust: it parses requests, keeps connections alive and writes replies outside the
  interpreter, and hands each request to a Python thread only to run Django. With gunicorn's threaded
  workers, each request also went through a Python event loop thread and back (two thread hand-offs and a
  Python HTTP parser per request). Side by side on the 16-grader drain, the web processes' CPU per grade fell
  from 3.3-5.5 ms to 1.9-2.7 ms and graded/s rose by a fifth to a quarter; the constant Django view and
  edx-submissions, served the same way, gained too.
- Keep-alive: graders and the LMS reuse their connections (xqueue-watcher polls through one
  ``requests.Session``).
- Workers = cores, 8 threads each: a thread waits on PostgreSQL or Redis for part of each request, and
  others fill that time. With 16 graders, 2 x 8 drained a tenth to a fifth faster than 2 x 4 in four
  alternating pairs (and no slower with 1 or 4 graders); 2 x 16, 1 x 8 and 3 x 4 were slower than 2 x 8.
  Each thread holds a database connection of its own (persistent): workers x threads connections per web
  container. At most ``EMPTY_POLL_WAITERS`` threads of a process hold an empty get_submission at once.
- Each worker imports the application itself (``config/wsgi.py`` also imports there what the first requests
  would), before it serves.
- Ordinary (non-streaming) replies are handed to Granian as one bytes object (``whole_replies``): Granian
  crosses from Rust into Python for every chunk of an iterable reply, and Django's response object is such
  an iterable, which cost a fifth of the web workers' time under the benchmark's load.
- No access log by default: a line per request costs measurable time at hundreds of requests per second, and
  the application logs every state change already.

Settings, from the environment: ``WEB_BIND`` (host:port, default 127.0.0.1:8000), ``WEB_WORKERS``,
``WEB_THREADS``, ``WEB_ACCESS_LOG`` (true/false), ``WEB_MAX_RSS`` (MiB: a worker above it is replaced
gracefully), ``WEB_LOG_LEVEL``; ``WEB_APP`` names another WSGI application (the benchmark serves its other
Django contestants with this same file). Standard library and Granian only: the benchmark runs this file with
other projects' interpreters.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

APP = "config.wsgi:application"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        sys.exit(f"{name}={raw!r} is not an integer")
    if value < 1:
        sys.exit(f"{name}={value} must be at least 1")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    sys.exit(f"{name}={raw!r} is not a boolean (use true/false)")


def options() -> dict[str, object]:
    """Granian's settings for this environment (also what the tests check)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    host, _, port = os.environ.get("WEB_BIND", "127.0.0.1:8000").rpartition(":")
    if not host or not port.isdigit():
        sys.exit(f"WEB_BIND={os.environ.get('WEB_BIND')!r} is not host:port")
    max_rss = os.environ.get("WEB_MAX_RSS", "")
    return {
        "target": os.environ.get("WEB_APP") or APP,
        "address": host.strip("[]"),
        "port": int(port),
        "interface": Interfaces.WSGI,
        "workers": _int("WEB_WORKERS", os.cpu_count() or 1),
        "blocking_threads": _int("WEB_THREADS", 8),
        "http": HTTPModes.http1,
        "http1_settings": HTTP1Settings(keep_alive=True),
        "websockets": False,
        "backlog": 2048,
        "log_level": os.environ.get("WEB_LOG_LEVEL", "warning"),
        "log_access": _bool("WEB_ACCESS_LOG", False),
        "respawn_failed_workers": True,
        "workers_max_rss": _int("WEB_MAX_RSS", 1) if max_rss else None,
        "working_dir": Path.cwd(),
    }


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def whole_replies(app: WSGIApp) -> WSGIApp:
    """``app``, with each ordinary reply handed to the server as a list of one bytes object.

    Django returns its response object, which the server must iterate chunk by chunk; a one-item list is sent
    in one call. Streaming replies (file downloads, anything without ``streaming = False``) go through as they
    are. Closing the reply (Django's ``request_finished``) still happens, once its body is in hand.
    """

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        reply = app(environ, start_response)
        if getattr(reply, "streaming", True):
            return reply
        try:
            return [reply.content]  # type: ignore[attr-defined]
        finally:
            reply.close()  # type: ignore[attr-defined]

    return application


def load(target: str) -> WSGIApp:
    """Import ``module:attribute`` (in each web worker) and wrap it with ``whole_replies``."""
    module, _, attribute = target.partition(":")
    return whole_replies(getattr(importlib.import_module(module), attribute or "application"))


def main() -> None:
    from granian import Granian

    # The application's modules are found from the working folder, as with ``granian`` on the command line.
    sys.path.insert(0, str(Path.cwd()))
    Granian(**options()).serve(target_loader=load)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
