"""Submission files: limits refused with the envelope and nothing stored; download links that expire."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from grading import files, lifecycle
from grading.models import Submission
from tests.conftest import lms_header, stored_files

CALLBACK = "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update"


def envelope(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.status_code
    return json.loads(response.content)


def submit(client: Client, uploads: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"xqueue_header": lms_header(CALLBACK), "xqueue_body": "{}"}
    data.update({name: SimpleUploadedFile(name, content) for name, content in uploads.items()})
    return envelope(client.post("/xqueue/submit/", data, **extra))


def pulled_urls(grader_client: Client) -> dict[str, str]:
    reply = envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))
    assert reply["return_code"] == 0, reply
    return json.loads(json.loads(reply["content"])["xqueue_files"])


# --- Limits ---------------------------------------------------------------------------------------------


def test_an_oversized_file_is_refused_naming_the_limit_and_nothing_is_stored(
    lms_client: Client, queue: Any, settings: Any, storage_kind: str
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILE_BYTES": 1000}
    reply = submit(lms_client, {"small.py": b"x" * 10, "big.bin": b"y" * 1001})
    assert reply == {
        "return_code": 1,
        "content": "File 'big.bin' is too large: 1001 bytes (limit 1000 bytes)",
    }
    assert not Submission.objects.exists()
    assert stored_files() == []


def test_a_file_exactly_at_the_size_limit_is_accepted(
    lms_client: Client, queue: Any, settings: Any, storage_kind: str
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILE_BYTES": 1000}
    assert submit(lms_client, {"ok.bin": b"y" * 1000}) == {"return_code": 0, "content": "1"}
    assert len(stored_files()) == 1


def test_too_many_files_are_refused_naming_the_limit_and_nothing_is_stored(
    lms_client: Client, queue: Any, settings: Any, storage_kind: str
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILES": 2}
    reply = submit(lms_client, {f"f{i}.py": b"print()\n" for i in range(3)})
    assert reply == {"return_code": 1, "content": "Too many files: 3 (limit 2)"}
    assert not Submission.objects.exists()
    assert stored_files() == []


def test_repeated_file_fields_count_towards_the_file_limit(lms_client: Client, queue: Any, settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILES": 2}
    data = {
        "xqueue_header": lms_header(CALLBACK),
        "xqueue_body": "{}",
        "same.py": [
            SimpleUploadedFile("same.py", b"1"),
            SimpleUploadedFile("same.py", b"2"),
            SimpleUploadedFile("same.py", b"3"),
        ],
    }
    assert envelope(lms_client.post("/xqueue/submit/", data)) == {
        "return_code": 1,
        "content": "Too many files: 3 (limit 2)",
    }
    assert stored_files() == []


def test_more_files_than_django_parses_is_an_envelope_not_a_400(lms_client: Client, queue: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 5
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILES": 3}
    reply = submit(lms_client, {f"f{i}.py": b"x" for i in range(8)})
    assert reply == {"return_code": 1, "content": "Too many files (limit 3)"}
    assert not Submission.objects.exists()
    assert stored_files() == []


def test_a_request_body_over_the_total_limit_is_refused_before_it_is_read(
    lms_client: Client, queue: Any, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILES": 1, "MAX_FILE_BYTES": 1024}
    reply = submit(lms_client, {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000, "c.bin": b"c" * 1000})
    assert reply == {"return_code": 1, "content": "Request too large (limit 3072 bytes)"}
    assert not Submission.objects.exists()
    assert stored_files() == []


def test_a_form_field_over_the_body_limit_is_refused_with_the_envelope(
    lms_client: Client, queue: Any, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    data = {"xqueue_header": lms_header(CALLBACK), "xqueue_body": "x" * 3000, "a.py": SimpleUploadedFile("a.py", b"1")}
    assert envelope(lms_client.post("/xqueue/submit/", data)) == {
        "return_code": 1,
        "content": "Request too large (limit 2048 bytes)",
    }
    assert stored_files() == []


def test_a_submission_the_database_fails_to_record_leaves_none_of_its_files(
    lms_client: Client, queue: Any, monkeypatch: Any, storage_kind: str
) -> None:
    def lost_connection(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(lifecycle, "submit", lost_connection)
    reply = submit(lms_client, {"answer.py": b"print(42)\n", "data.csv": b"1,2\n"})
    assert reply == {"return_code": 1, "content": "Service temporarily unavailable; try again"}
    assert stored_files() == []


# --- Storage paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/etc/shadow", "shadow"),
        ("..", "file"),
        (".bashrc", "bashrc"),
        ("my answer (1).py", "my_answer_1.py"),
        ("", "file"),
    ],
)
def test_safe_name_keeps_no_folders_and_no_hidden_names(name: str, expected: str) -> None:
    assert files.safe_name(name) == expected


def test_storage_folders_are_random_per_submission(db: Any) -> None:
    a = files.store({"x.py": SimpleUploadedFile("x.py", b"1")})
    b = files.store({"x.py": SimpleUploadedFile("x.py", b"2")})
    assert a["x.py"] != b["x.py"]
    for path in (a["x.py"], b["x.py"]):
        folder = path.split("/")[1]
        assert len(folder) == 32 and int(folder, 16) >= 0


def test_a_failed_save_leaves_none_of_the_submissions_files(db: Any, monkeypatch: Any) -> None:
    real_save = default_storage.save
    saved: list[str] = []

    def save_then_fail(name: str, content: Any, **kwargs: Any) -> str:
        if saved:
            raise OSError("disk full")
        saved.append(real_save(name, content, **kwargs))
        return saved[-1]

    monkeypatch.setattr(default_storage, "save", save_then_fail)
    with pytest.raises(OSError):
        files.store({"a.py": SimpleUploadedFile("a.py", b"1"), "b.py": SimpleUploadedFile("b.py", b"2")})
    assert len(saved) == 1
    assert stored_files() == []


# --- Download links -------------------------------------------------------------------------------------------


def test_local_download_link_serves_exact_bytes_as_an_attachment(
    lms_client: Client, grader_client: Client, queue: Any
) -> None:
    content = b"<script>alert(1)</script>\x00\xff"
    assert submit(lms_client, {"page.html": content})["return_code"] == 0
    url = pulled_urls(grader_client)["page.html"]
    response = Client().get(urlsplit(url).path)  # no session: graders need only the link
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")


def test_an_expired_local_link_is_refused_with_410(
    lms_client: Client, grader_client: Client, queue: Any, settings: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "FILE_URL_SECONDS": 600}
    assert submit(lms_client, {"a.py": b"1"})["return_code"] == 0
    path = urlsplit(pulled_urls(grader_client)["a.py"]).path
    with time_machine.travel(timezone.now() + timedelta(seconds=590)):
        assert Client().get(path).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(seconds=610)):
        response = Client().get(path)
    assert response.status_code == 410
    assert response.content == b"This download link has expired.\n"


@pytest.mark.parametrize("where", ["payload", "signature", "other_salt"])
def test_a_tampered_local_link_is_refused_with_403(
    lms_client: Client, grader_client: Client, queue: Any, where: str
) -> None:
    from django.core import signing

    assert submit(lms_client, {"a.py": b"1"})["return_code"] == 0
    path = urlsplit(pulled_urls(grader_client)["a.py"]).path
    token, name = path.split("/")[-2:]
    stored = Submission.objects.get().files["a.py"]
    if where == "payload":
        forged_payload = signing.b64_encode(json.dumps(stored.replace("a.py", "b.py")).encode()).decode()
        token = forged_payload + token[token.index(":") :]
    elif where == "signature":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    else:
        token = signing.dumps(stored, salt="something-else")
    response = Client().get(f"/xqueue/files/{token}/{name}")
    assert response.status_code == 403
    assert response.content == b"This download link is not valid.\n"


def test_a_link_to_a_deleted_file_is_404(lms_client: Client, grader_client: Client, queue: Any) -> None:
    assert submit(lms_client, {"a.py": b"1"})["return_code"] == 0
    path = urlsplit(pulled_urls(grader_client)["a.py"]).path
    files.delete(Submission.objects.get().files.values())
    assert Client().get(path).status_code == 404


def test_s3_links_are_presigned_with_the_configured_expiry(
    lms_client: Client, grader_client: Client, queue: Any, settings: Any, s3_bucket: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "FILE_URL_SECONDS": 120}
    assert submit(lms_client, {"a.py": b"print(1)\n"})["return_code"] == 0
    url = pulled_urls(grader_client)["a.py"]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == f"/{s3_bucket.name}/{Submission.objects.get().files['a.py']}"
    assert query["X-Amz-Expires"] == ["120"]
    assert query["X-Amz-Signature"][0]
    # The object itself is private: only the signed URL reads it.
    acl = s3_bucket.Object(Submission.objects.get().files["a.py"]).Acl()
    assert all(grant["Grantee"].get("URI") is None for grant in acl.grants)
