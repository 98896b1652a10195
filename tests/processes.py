"""Subprocesses of the tests (servers, workers), each started in a process group of its own."""

from __future__ import annotations

import os
import signal
import subprocess
from urllib.parse import quote


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """End ``process`` and everything it started: SIGTERM to its group, SIGKILL after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def database_url() -> str:
    """The test database, as a DATABASE_URL for another process (a server, a worker) the test starts."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    scheme, user, port = {"postgresql": ("postgres", "postgres", 5432), "mysql": ("mysql", "root", 3306)}[
        connection.vendor
    ]
    auth = (db["USER"] or user) + (f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else "")
    return f"{scheme}://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or port}/{db['NAME']}"
