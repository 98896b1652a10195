"""Files over real HTTP: the LMS uploads, a grader downloads each file through the URL it was handed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.files.storage import default_storage

from grading.models import Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, stored_files
from tests.xqclient import XQueueClient, lms_body

pytestmark = pytest.mark.django_db(transaction=True)

# Bytes that survive no accidental re-encoding: every byte value, NULs, CRLF, invalid UTF-8.
BINARY = bytes(range(256)) * 40 + b"\r\n\x00\xff\xfe"
FILES = {
    "answer.py": b"def f(x):\n    return x * 2\n",
    "data.bin": BINARY,
    "../../etc/passwd": b"root:x:0:0:not really:/root:/bin/sh\n",
}


def header(queue: str = "test-123") -> dict[str, str]:
    return {
        "lms_callback_url": "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update",
        "lms_key": "k",
        "queue_name": queue,
    }


def pull_files(base_url: str) -> dict[str, str]:
    watcher = XQueueClient(base_url, "grader", GRADER_PASSWORD)
    reply = watcher.get_submission("test-123")
    assert reply["return_code"] == 0, reply
    return json.loads(json.loads(reply["content"])["xqueue_files"])


def test_grader_downloads_every_file_byte_for_byte_through_its_url(
    live_server: Any, storage_kind: str, lms_user: Any, grader_user: Any
) -> None:
    assert (storage_kind == "s3") == hasattr(default_storage, "bucket_name")
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    assert lms.submit(header(), lms_body(), files=FILES) == {"return_code": 0, "content": "1"}
    assert len(stored_files()) == len(FILES)

    urls = pull_files(live_server.url)
    assert set(urls) == set(FILES)
    for name, url in urls.items():
        assert urlsplit(url).scheme == "http" and urlsplit(url).netloc  # absolute
        response = requests.get(url, timeout=5)  # a grader's plain GET: no session, no cookies
        assert response.status_code == 200, (name, response.text[:200])
        assert response.content == FILES[name]

    if storage_kind == "s3":
        query = parse_qs(urlsplit(urls["answer.py"]).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Expires"] == [str(24 * 3600)]
    else:
        assert urls["answer.py"].startswith(live_server.url + "/xqueue/files/")


def test_a_file_named_like_a_path_is_stored_inside_its_submission_folder(
    live_server: Any, storage_kind: str, lms_user: Any, grader_user: Any, settings: Any
) -> None:
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    evil = {"../../etc/passwd": b"pwned?\n", "..\\..\\boot.ini": b"also not\n", ".bashrc": b"rm -rf /\n"}
    assert lms.submit(header(), lms_body(), files=evil)["return_code"] == 0

    stored = Submission.objects.get().files
    assert set(stored) == set(evil)  # the grader still sees the names the LMS used
    folders = {os.path.dirname(path) for path in stored.values()}
    assert len(folders) == 1
    (folder,) = folders
    assert folder.startswith("submissions/") and ".." not in folder
    for path in stored.values():
        name = os.path.basename(path)
        assert ".." not in path and "\\" not in path and not name.startswith(".")
        assert default_storage.exists(path)
    assert sorted(stored_files()) == sorted(stored.values())
    if storage_kind == "local":
        media = Path(settings.MEDIA_ROOT).resolve()
        on_disk = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
        assert len(on_disk) == 3 and all(media in p.resolve().parents for p in on_disk)

    urls = pull_files(live_server.url)
    for name, url in urls.items():
        assert requests.get(url, timeout=5).content == evil[name]


def test_two_submissions_with_the_same_file_name_never_collide(
    live_server: Any, storage_kind: str, lms_user: Any, grader_user: Any
) -> None:
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    first, second = dict(header()), dict(header())
    second["lms_callback_url"] += "/2"
    assert lms.submit(first, lms_body(), files={"answer.py": b"one\n"})["return_code"] == 0
    assert lms.submit(second, lms_body(), files={"answer.py": b"two\n"})["return_code"] == 0
    assert [requests.get(pull_files(live_server.url)["answer.py"], timeout=5).content for _ in range(2)] == [
        b"one\n",
        b"two\n",
    ]
