"""Structured logs: one line per transition and per delivery attempt, as JSON when LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from grading import delivery, lifecycle
from grading.models import Queue
from tests.conftest import submit
from tests.lms import FakeLMS
from tests.xqclient import grade

ROOT = Path(__file__).resolve().parents[2]


def json_formatter() -> logging.Formatter:
    """The formatter LOG_FORMAT=json configures, built from the settings as logging.config builds it."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    options = dict(settings.LOGGING["formatters"]["json"])
    return import_string(options.pop("()"))(**options)


@pytest.fixture
def json_lines() -> Iterator[StringIO]:
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    grading_logger = logging.getLogger("grading")
    grading_logger.addHandler(handler)
    previous = grading_logger.level
    grading_logger.setLevel(logging.INFO)
    yield stream
    grading_logger.removeHandler(handler)
    grading_logger.setLevel(previous)


def parse(stream: StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.django_db
def test_every_transition_and_delivery_attempt_is_one_json_line_with_submission_and_queue(
    json_lines: StringIO, queue: Queue, lms_user: Any, grader_user: Any, fake_lms: FakeLMS
) -> None:
    fake_lms.script = [503, 200]
    s = submit(queue, lms_user, fake_lms.callback_url())
    lease = lifecycle.lease_next(queue, grader_user)
    lifecycle.accept_result(s.pk, lease.key, grade(), grader_user, [queue.pk])
    claim = lifecycle.score_and_claim(s.pk)
    assert claim is not None
    assert delivery.send(claim) == lifecycle.DeliveryOutcome.RETRY
    lifecycle.Submission.objects.filter(pk=s.pk).update(next_delivery_at=lifecycle.timezone.now())
    assert delivery.deliver(s.pk) == lifecycle.DeliveryOutcome.DELIVERED

    lines = parse(json_lines)
    transitions = [(e["from"], e["to"], e["reason"]) for e in lines if e["logger"] == "grading.lifecycle"]
    assert transitions == [
        ("", "queued", "submitted"),
        ("queued", "pulled", "lease"),
        ("pulled", "returned", "result"),
        ("returned", "graded", "scored"),
        ("graded", "graded", "delivery_retry"),
        ("graded", "delivered", "delivered"),
    ]
    attempts = [e for e in lines if e["logger"] == "grading.delivery"]
    assert [(e["attempt"], e["http_status"], e["outcome"]) for e in attempts] == [
        (1, 503, "retry"),
        (2, 200, "delivered"),
    ]
    for entry in lines:
        assert entry["submission_id"] == s.pk
        assert entry["queue"] == "test-123"
        assert entry["level"] == "INFO"
        assert entry["message"].startswith(("transition submission=", "delivery submission="))
        assert entry["time"].endswith("+00:00")
    assert attempts[0]["retry_in"] > 0
    assert isinstance(attempts[0]["duration_ms"], int)


def test_json_formatter_includes_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info(), extra={"queue": "q"}
        )
    entry = json.loads(json_formatter().format(record))
    assert entry["message"] == "failed here"
    assert entry["queue"] == "q"
    assert "ValueError: boom" in entry["exception"]


def run_django(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "GRADEQUEUE_DEV": "1", **env}
    environment.pop("DATABASE_URL", None)
    setup = "import django; django.setup(); import logging; "
    return subprocess.run(
        [sys.executable, "-c", setup + code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_log_format_json_switches_the_console_to_one_json_object_per_line(tmp_path: Path) -> None:
    code = "logging.getLogger('grading.lifecycle').info('transition x', extra={'submission_id': 7, 'queue': 'q1'})"
    result = run_django(code, LOG_FORMAT="json", GRADEQUEUE_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry == {
        **entry,
        "logger": "grading.lifecycle",
        "message": "transition x",
        "submission_id": 7,
        "queue": "q1",
        "level": "INFO",
    }

    plain = run_django(code, GRADEQUEUE_VAR_DIR=str(tmp_path))
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.strip().endswith("INFO grading.lifecycle transition x")


def test_an_unknown_log_format_is_refused_at_start(tmp_path: Path) -> None:
    result = run_django("pass", LOG_FORMAT="xml", GRADEQUEUE_VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "LOG_FORMAT='xml' is not one of: plain, json" in result.stderr
