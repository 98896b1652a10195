import http.client
import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run the whole service in the foreground: the web server (Granian), a Celery worker and Celery beat. "
        "Ctrl-C stops all three. Used by `make run`; production runs them as separate services."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "18040"))
        parser.add_argument("--concurrency", default=os.environ.get("CELERY_CONCURRENCY", "2"))

    def handle(self, *args: Any, **opts: Any) -> None:
        python = sys.executable
        commands = {
            "web": [python, "-m", "config.serve"],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(opts["concurrency"]),
                "-E",
            ],
            "beat": [python, "-m", "celery", "-A", "celery_app", "beat", "--loglevel", "INFO"],
        }
        # The web server as production runs it (config/serve.py), two workers, with an access log.
        web_env = {
            **os.environ,
            "WEB_BIND": f"{opts['host']}:{opts['port']}",
            "WEB_WORKERS": os.environ.get("WEB_WORKERS", "2"),
            "WEB_ACCESS_LOG": os.environ.get("WEB_ACCESS_LOG", "true"),
        }
        procs = {
            name: subprocess.Popen(cmd, env=web_env if name == "web" else None)  # noqa: S603
            for name, cmd in commands.items()
        }
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        listening = False
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with status {proc.returncode}; stopping the others")
                        stopping = True
                if not stopping and not listening and answers(opts["host"], int(opts["port"])):
                    # Said only once it is true: the web server takes seconds to start, and a grader started
                    # on an earlier promise would spend its first requests (1 s timeouts) on a closed port.
                    listening = True
                    self.stdout.write(
                        f"gradequeue is listening on http://{opts['host']}:{opts['port']}/xqueue/ (Ctrl-C stops)"
                    )
                    self.stdout.flush()
                time.sleep(0.1 if not listening else 0.5)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def answers(host: str, port: int) -> bool:
    """Whether the web server at host:port answers the protocol's status call now."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/xqueue/status/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
