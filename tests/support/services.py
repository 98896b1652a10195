"""gradequeue's own entry points started as production starts them: the web server (``python -m config.serve``)
and a Celery-queue grader (``python -m gradequeue_grader``), each in its own process group, and a Celery worker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from django.conf import settings as django_settings

from tests.lms import free_port
from tests.processes import database_url, stop_group

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def running_server(
    media_root: str, *, log: Any = None, **env_overrides: str | None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """gradequeue served as production serves it, on the test database, in its own process group.

    ``env_overrides`` change its environment (None removes a variable); ``log``, a file, takes its output.
    Yields the base URL and the process.
    """
    port = free_port()
    env: dict[str, str | None] = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GRADEQUEUE_DEV": "1",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "GRADEQUEUE_CELERY_QUEUE": django_settings.CELERY_TASK_DEFAULT_QUEUE,
        "MEDIA_ROOT": media_root,
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
        "CACHE_URL": None,
    }
    options = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if "data_folder_in" in options:
        env["GRADEQUEUE_BROKER_DIR"] = options["data_folder_in"]
    env.update(env_overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "config.serve"],
        cwd=ROOT,
        env={name: value for name, value in env.items() if value is not None},
        start_new_session=True,
        stdout=log,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base_url}/xqueue/status/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, "the web server exited at start-up"
            assert time.monotonic() < deadline, "the web server did not answer within 60 s"
            time.sleep(0.2)
        yield base_url, process
    finally:
        stop_group(process, timeout=15)


@contextlib.contextmanager
def grader(queue: str, function: str, marker_dir: Path, concurrency: int = 4) -> Iterator[subprocess.Popen[bytes]]:
    """The grader entry point as a grader author runs it, in its own process group (so that it can be killed
    whole, pool processes included)."""
    command = [
        sys.executable, "-m", "gradequeue_grader", "--queue", queue, "--function", function,
        "--broker", django_settings.CELERY_BROKER_URL, "--concurrency", str(concurrency), "--loglevel", "WARNING",
    ]  # fmt: skip
    options = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if "data_folder_in" in options:
        command += ["--broker-folder", options["data_folder_in"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADER_MARKER_DIR": str(marker_dir)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process, timeout=3)


def start_worker_process(delivery_timeout: str = "1", database: str = "") -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GRADEQUEUE_DEV": "1",
        "DATABASE_URL": database or database_url(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "GRADEQUEUE_CELERY_QUEUE": django_settings.CELERY_TASK_DEFAULT_QUEUE,
        "GRADEQUEUE_DELIVERY_TIMEOUT": delivery_timeout,
        "GRADEQUEUE_SWEEP_GRACE_SECONDS": "0",
    }
    options = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if "data_folder_in" in options:
        env["GRADEQUEUE_BROKER_DIR"] = options["data_folder_in"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )
