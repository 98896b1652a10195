"""Who may read /metrics: in production only the token (an address rule must be chosen, and is warned
about); in development loopback as well. The production cases start a real process with production
settings (no GRADEQUEUE_DEV, not under pytest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps(settings.GRADEQUEUE['METRICS_ALLOWED_NETWORKS']))"
)


def start_production(**env: str) -> tuple[list[str], str]:
    """Set Django up as a production process does; its allowed networks and its log (stderr)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GRADEQUEUE_", "DJANGO_"))}
    base.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={
            **base,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": "a-production-like-key-for-this-test",
            "GRADEQUEUE_CALLBACK_HOSTS": "lms.example.org",
            "GRADEQUEUE_VAR_DIR": str(ROOT / "var"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_production_allows_no_address_by_default_and_says_at_start_that_metrics_need_the_token() -> None:
    networks, log = start_production()
    assert networks == []
    assert "WARNING grading.metrics /metrics is closed to everyone: GRADEQUEUE_METRICS_TOKEN is not set" in log


def test_production_warns_at_start_when_addresses_may_read_metrics_without_a_token() -> None:
    networks, log = start_production(GRADEQUEUE_METRICS_ALLOWED_NETWORKS="127.0.0.1/32")
    assert networks == ["127.0.0.1/32"]
    assert "/metrics is open without a token to 127.0.0.1/32" in log


def test_production_with_a_token_starts_quietly() -> None:
    networks, log = start_production(GRADEQUEUE_METRICS_TOKEN="a-long-random-token")
    assert networks == []
    assert "grading.metrics" not in log


def test_development_allows_loopback_and_starts_quietly() -> None:
    networks, log = start_production(GRADEQUEUE_DEV="1")
    assert networks == ["127.0.0.1/32", "::1/128"]
    assert "grading.metrics" not in log


@pytest.mark.django_db
def test_with_production_defaults_loopback_is_refused_and_the_token_is_the_way_in(settings: Any) -> None:
    settings.GRADEQUEUE = {
        **settings.GRADEQUEUE,
        "DEVELOPMENT": False,
        "METRICS_ALLOWED_NETWORKS": [],
        "METRICS_TOKEN": "scrape-token",
    }
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="::1").status_code == 403
    ok = Client().get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert ok.status_code == 200
    assert b"gradequeue_queue_waiting" in ok.content
