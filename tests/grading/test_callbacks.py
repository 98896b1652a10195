"""The callback allow-list: grades go only to hosts the operator listed; anything else is refused at submit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from grading import callbacks
from grading.models import Submission
from tests.conftest import lms_header, stored_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def allow(settings: Any) -> Any:
    def set_hosts(*patterns: str) -> None:
        settings.GRADEQUEUE = {**settings.GRADEQUEUE, "CALLBACK_HOSTS": list(patterns)}

    return set_hosts


@pytest.mark.parametrize(
    "url",
    [
        "https://lms.example.org/courses/x/xqueue/1/p/score_update",
        "http://LMS.Example.ORG:8000/cb",
        "https://lms.example.org./cb",
        "https://studio.courses.example.net/cb",
        "http://[::1]:8000/cb",
    ],
)
def test_listed_hosts_and_patterns_are_allowed(allow: Any, url: str) -> None:
    allow("lms.example.org", "*.courses.example.net", "[::1]")
    assert callbacks.refusal(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.example.com/cb", "host 'evil.example.com' is not on"),
        ("https://lms.example.org.evil.com/cb", "host 'lms.example.org.evil.com' is not on"),
        ("https://courses.example.net/cb", "host 'courses.example.net' is not on"),  # *. needs a subdomain
        ("http://169.254.169.254/latest/meta-data/", "host '169.254.169.254' is not on"),
        ("https://lms.example.org@evil.com/cb", "plain http(s) URL"),
        ("https://user:pw@lms.example.org/cb", "plain http(s) URL"),
        ("https://evil.com\\@lms.example.org/cb", "plain http(s) URL"),
        ("https://lms.example.org /cb", "plain http(s) URL"),
        ("ftp://lms.example.org/cb", "plain http(s) URL"),
        ("file:///etc/passwd", "plain http(s) URL"),
        ("/relative/cb", "plain http(s) URL"),
        ("https://lms.example.org:99999/cb", "plain http(s) URL"),
    ],
)
def test_other_hosts_and_odd_urls_are_refused(allow: Any, url: str, why: str) -> None:
    allow("lms.example.org", "*.courses.example.net")
    refusal = callbacks.refusal(url)
    assert refusal is not None and refusal.startswith("Callback URL not allowed: ")
    assert why in refusal


def test_development_allows_loopback_only(settings: Any) -> None:
    assert sorted(settings.GRADEQUEUE["CALLBACK_HOSTS"]) == ["127.0.0.1", "::1", "localhost"]
    assert callbacks.refusal("http://127.0.0.1:8000/cb") is None
    assert callbacks.refusal("http://localhost/cb") is None
    assert callbacks.refusal("https://lms.example.org/cb") is not None


def test_submit_with_a_disallowed_callback_is_refused_and_nothing_is_stored(
    lms_client: Client, queue: Any, allow: Any, storage_kind: str
) -> None:
    allow("lms.example.org")
    data = {
        "xqueue_header": lms_header("https://attacker.example.com/steal"),
        "xqueue_body": "{}",
        "answer.py": SimpleUploadedFile("answer.py", b"print(1)\n"),
    }
    reply = json.loads(lms_client.post("/xqueue/submit/", data).content)
    assert reply == {
        "return_code": 1,
        "content": "Callback URL not allowed: host 'attacker.example.com' is not on this server's callback allow-list",
    }
    assert not Submission.objects.exists()
    assert stored_files() == []

    data["xqueue_header"] = lms_header("https://lms.example.org/courses/c/xqueue/1/p/score_update")
    data["answer.py"] = SimpleUploadedFile("answer.py", b"print(1)\n")
    assert json.loads(lms_client.post("/xqueue/submit/", data).content) == {"return_code": 0, "content": "1"}


def _settings_in_subprocess(env: dict[str, str], expression: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GRADEQUEUE_", "DJANGO_", "PYTEST"))}
    clean.update(env)
    code = f"import django; django.setup(); from django.conf import settings; print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def test_production_refuses_to_start_without_a_callback_allow_list() -> None:
    result = _settings_in_subprocess(
        {"DJANGO_SECRET_KEY": "x" * 50, "DJANGO_SETTINGS_MODULE": "config.settings"},
        "settings.GRADEQUEUE['CALLBACK_HOSTS']",
    )
    assert result.returncode != 0
    assert "GRADEQUEUE_CALLBACK_HOSTS is not set" in result.stderr


def test_production_takes_the_allow_list_from_the_environment() -> None:
    result = _settings_in_subprocess(
        {
            "DJANGO_SECRET_KEY": "x" * 50,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "GRADEQUEUE_CALLBACK_HOSTS": "lms.example.org, *.courses.example.org",
        },
        "settings.GRADEQUEUE['CALLBACK_HOSTS']",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['lms.example.org', '*.courses.example.org']"


def test_s3_storage_is_selected_by_environment_variables() -> None:
    result = _settings_in_subprocess(
        {
            "GRADEQUEUE_DEV": "1",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "GRADEQUEUE_S3_BUCKET": "grades",
            "GRADEQUEUE_S3_ENDPOINT_URL": "https://s3.example.org",
            "GRADEQUEUE_S3_REGION": "eu-west-1",
            "GRADEQUEUE_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "GRADEQUEUE_S3_SECRET_ACCESS_KEY": "secret",
            "GRADEQUEUE_FILE_URL_SECONDS": "3600",
        },
        "__import__('json').dumps(settings.STORAGES['default'], sort_keys=True)",
    )
    assert result.returncode == 0, result.stderr
    default = json.loads(result.stdout)
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    assert default["OPTIONS"] == {
        "bucket_name": "grades",
        "endpoint_url": "https://s3.example.org",
        "region_name": "eu-west-1",
        "access_key": "AKIAEXAMPLE",
        "secret_key": "secret",
        "querystring_auth": True,
        "querystring_expire": 3600,
        "signature_version": "s3v4",
        "file_overwrite": False,
        "default_acl": None,
    }


def test_local_storage_is_the_default() -> None:
    result = _settings_in_subprocess(
        {"GRADEQUEUE_DEV": "1", "DJANGO_SETTINGS_MODULE": "config.settings"}, "settings.STORAGES['default']['BACKEND']"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.core.files.storage.FileSystemStorage"
