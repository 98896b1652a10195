"""What the README and `make run` tell a newcomer holds: the watcher configuration `make run` prints is the
README's, `make run` says it is listening only once it answers, and the worker started as the README writes
it logs the promised line per delivery attempt."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings
from django.core.management import call_command

from grading import lifecycle
from grading.models import Queue
from tests.conftest import submit
from tests.lms import FakeLMS, free_port
from tests.processes import database_url, stop_group
from tests.xqclient import grade

ROOT = Path(__file__).resolve().parents[2]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"### {title}\n")
    end = text.index("\n## ", start)
    return text[start:end]


def service_env() -> dict[str, str]:
    """The environment of a gradequeue process on the test database and broker, as a newcomer's shell has it."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GRADEQUEUE_DEV": "1",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "GRADEQUEUE_CELERY_QUEUE": django_settings.CELERY_TASK_DEFAULT_QUEUE,
    }
    for name in ("CACHE_URL", "LOG_LEVEL", "LOG_FORMAT"):
        env.pop(name, None)
    options = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if "data_folder_in" in options:
        env["GRADEQUEUE_BROKER_DIR"] = options["data_folder_in"]
    return env


@pytest.mark.django_db
def test_the_watcher_configuration_make_run_prints_is_the_readmes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADEQUEUE_DEV", "1")
    out = io.StringIO()
    call_command("dev_setup", base_url="http://127.0.0.1:18040", stdout=out)
    printed = out.getvalue()
    start = printed.index("\n{", printed.index("Connect xqueue-watcher"))
    end = printed.index("\n}\n", start) + 2
    section = readme_section("Connect xqueue-watcher")
    documented = re.search(r"```json\n(.*?)```", section, re.S)
    assert documented is not None
    assert json.loads(printed[start:end]) == json.loads(documented.group(1))
    assert json.loads(printed[start:end]) == {
        "test-123": {
            "SERVER": "http://127.0.0.1:18040",
            "AUTH": ["grader", "grader-dev-password"],
            "CONNECTIONS": 2,
            "HANDLERS": [{"HANDLER": "answer_grader.AnswerGrader", "KWARGS": {"grader_root": "/path/to/graders/"}}],
        }
    }
    # The handler it names is the one the README shows, a Grader that grades.
    handler = re.search(r"```python\n(from xqueue_watcher.grader import Grader\n.*?)```", section, re.S)
    assert handler is not None
    assert "class AnswerGrader(Grader):" in handler.group(1)
    assert "def grade(self, grader_path, grader_config, student_response):" in handler.group(1)


@pytest.mark.django_db(transaction=True)
def start_make_run_processes(port: int) -> subprocess.Popen[str]:
    """The Procfile under honcho, as `make run` starts it (in a session of its own, as a terminal's job)."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "honcho"), "start", "--no-colour", "-f", "Procfile"],
        cwd=ROOT,
        env={
            **service_env(),
            "GQ_PYTHON": sys.executable,
            "GQ_HOST": "127.0.0.1",
            "GQ_PORT": str(port),
            "CELERY_CONCURRENCY": "1",
        },
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def read_until_listening(process: subprocess.Popen[str], port: int) -> list[str]:
    assert process.stdout is not None
    lines = [process.stdout.readline()]
    while lines[-1] and "gradequeue is listening" not in lines[-1]:
        lines.append(process.stdout.readline())
    assert f"gradequeue is listening on http://127.0.0.1:{port}/xqueue/" in lines[-1], "make run ended without it"
    return lines


def descendants(pid: int) -> set[int]:
    """Every process started, directly or not, by ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int((Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bytes | None:
    """The command line of process ``pid`` if it still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return None if state in ("Z", "X") else (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except (OSError, IndexError):
        return None


def test_make_run_says_it_is_listening_only_once_the_web_server_answers() -> None:
    port = free_port()
    process = start_make_run_processes(port)
    try:
        read_until_listening(process, port)
        # The moment it is said, a watcher's first request (1 s timeout) is answered.
        reply = requests.get(f"http://127.0.0.1:{port}/xqueue/status/", timeout=1)
        assert (reply.status_code, reply.json()) == (200, {"return_code": 0, "content": "OK"})
    finally:
        stop_group(process, timeout=20)


def test_ctrl_c_on_make_run_stops_every_process_it_started_granian_workers_included() -> None:
    port = free_port()
    process = start_make_run_processes(port)
    started: set[int] = set()
    try:
        read_until_listening(process, port)
        started = descendants(process.pid)
        commands = [(Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ") for pid in started]
        # web (Granian and its two workers), worker, beat and the ready process, each with honcho's reader.
        assert sum(b"config.serve" in c for c in commands) == 3 and any(b"celery_app beat" in c for c in commands)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends its foreground job on Ctrl-C
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.read()
        time.sleep(0.5)
        assert {pid: cmdline for pid in started if (cmdline := running(pid)) is not None} == {}
    finally:
        stop_group(process, timeout=20)
        for pid in started:
            if running(pid) is not None:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.django_db(transaction=True)
def test_the_worker_started_as_the_readme_writes_it_logs_each_delivery_attempt(
    queue: Queue, lms_user: Any, grader_user: Any, fake_lms: FakeLMS
) -> None:
    from celery_app import app

    app.control.purge()
    with tempfile.TemporaryFile("w+") as log:
        # `celery -A celery_app worker`, with nothing added: Celery's own default level is WARNING.
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker"],
            cwd=ROOT,
            env=service_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            submission = submit(queue, lms_user, fake_lms.callback_url())
            lease = lifecycle.lease_next(queue, grader_user)
            assert lease is not None
            outcome = lifecycle.accept_result(submission.pk, lease.key, grade(), grader_user, [queue.pk])
            assert outcome is lifecycle.ResultOutcome.ACCEPTED
            deadline = time.monotonic() + 90
            while not fake_lms.delivered() and time.monotonic() < deadline:
                assert worker.poll() is None, "the worker exited"
                time.sleep(0.1)
            assert len(fake_lms.delivered()) == 1
            # The line is written once the attempt is recorded, just after the LMS answered.
            expected = (
                f"grading.delivery delivery submission={submission.pk} attempt=1 http_status=200 outcome=delivered"
            )
            while time.monotonic() < deadline:
                log.seek(0)
                if expected in log.read():
                    break
                time.sleep(0.1)
        finally:
            stop_group(worker, timeout=20)
        log.seek(0)
        output = log.read()
    assert expected in output, output[-3000:]
    assert f"grading.lifecycle transition submission={submission.pk} queue={queue.name} returned->graded" in output
