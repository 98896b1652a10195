"""Hostile and careless input at the XQueue edge: one test per way it used to cost an HTTP 500.

Each answer is the protocol's envelope (or its 302 to the login page), the same on every database, and a
refused request stores nothing: no submission, no event, no file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from grading.models import Queue, Status, Submission, SubmissionEvent
from tests.conftest import LMS_PASSWORD, lms_header, submit

pytestmark = pytest.mark.django_db

CALLBACK = "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update"


def envelope(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


def stored_files() -> list[str]:
    root = Path(django_settings.MEDIA_ROOT)
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_nothing_stored() -> None:
    assert Submission.objects.count() == 0
    assert SubmissionEvent.objects.count() == 0
    assert stored_files() == []


def post_submit(client: Client, header: str, body: str = "answer", **files: Any) -> dict[str, Any]:
    return envelope(client.post("/xqueue/submit/", {"xqueue_header": header, "xqueue_body": body, **files}))


# --- Deeply nested JSON ---------------------------------------------------------------------------------


def test_submit_with_a_header_nested_100000_deep_is_an_invalid_format(lms_client: Client) -> None:
    header = '{"lms_callback_url": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert post_submit(lms_client, header) == {"return_code": 1, "content": "Queue request has invalid format"}
    assert_nothing_stored()


def test_put_result_with_a_header_nested_100000_deep_is_an_incorrect_reply_format(grader_client: Client) -> None:
    header = '{"submission_id": ' + "[" * 100_000 + "]" * 100_000 + "}"
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": "{}"}))
    assert reply == {"return_code": 1, "content": "Incorrect reply format"}


# --- NUL characters -------------------------------------------------------------------------------------


def test_submit_with_a_nul_in_the_body_is_refused_naming_the_field(lms_client: Client) -> None:
    reply = post_submit(lms_client, lms_header(CALLBACK), body="print(1)\x00")
    assert reply == {
        "return_code": 1,
        "content": "'xqueue_body' contains a NUL character (U+0000), which is not accepted",
    }
    assert_nothing_stored()


@pytest.mark.parametrize("lms_key", ["a\x00b", "\x00"])
def test_submit_with_a_nul_in_the_lms_key_as_a_json_escape_is_refused_naming_it(
    lms_client: Client, lms_key: str
) -> None:
    header = json.dumps({"lms_callback_url": CALLBACK, "lms_key": lms_key, "queue_name": "test-123"})
    assert "\\u0000" in header  # the NUL travels as a JSON escape, as the LMS's json.dumps would send it
    assert post_submit(lms_client, header) == {
        "return_code": 1,
        "content": "'xqueue_header' key 'lms_key' contains a NUL character (U+0000), which is not accepted",
    }
    assert_nothing_stored()


def test_submit_with_a_nul_in_an_extra_header_key_is_refused_too(lms_client: Client) -> None:
    header = json.dumps({"lms_callback_url": CALLBACK, "lms_key": "k", "queue_name": "test-123", "x\x00": "y"})
    reply = post_submit(lms_client, header)
    assert reply["return_code"] == 1
    assert "NUL character (U+0000)" in reply["content"]
    assert_nothing_stored()


def test_submit_with_a_nul_in_a_file_part_name_is_refused_and_no_file_is_kept(lms_client: Client) -> None:
    upload = SimpleUploadedFile("answer.py", b"print(1)\n")
    assert post_submit(lms_client, lms_header(CALLBACK), **{"answer\x00.py": upload}) == {
        "return_code": 1,
        "content": "A file part's name contains a NUL character (U+0000), which is not accepted",
    }
    assert_nothing_stored()


def test_put_result_with_a_nul_in_the_reply_is_refused_and_the_lease_stays(
    grader_client: Client, queue: Queue, lms_user: Any
) -> None:
    submit(queue, lms_user)
    content = json.loads(envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))["content"])
    reply = envelope(
        grader_client.post(
            "/xqueue/put_result/",
            {"xqueue_header": content["xqueue_header"], "xqueue_body": '{"correct": true, "msg": "\x00"}'},
        )
    )
    assert reply == {
        "return_code": 1,
        "content": "'xqueue_body' contains a NUL character (U+0000), which is not accepted",
    }
    submission = Submission.objects.get()
    assert (submission.status, submission.grader_reply) == (Status.PULLED, "")


def test_put_result_with_a_nul_in_the_submission_key_is_refused(grader_client: Client) -> None:
    header = json.dumps({"submission_id": 1, "submission_key": "k\x00"})
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": "{}"}))
    assert reply == {
        "return_code": 1,
        "content": "'xqueue_header' key 'submission_key' contains a NUL character (U+0000), which is not accepted",
    }


def test_login_with_a_nul_in_the_username_is_refused_naming_the_field(lms_user: Any) -> None:
    reply = envelope(Client().post("/xqueue/login/", {"username": "lms\x00", "password": LMS_PASSWORD}))
    assert reply == {
        "return_code": 1,
        "content": "'username' contains a NUL character (U+0000), which is not accepted",
    }


# --- Lone surrogates ------------------------------------------------------------------------------------


def test_submit_with_a_lone_surrogate_in_the_callback_url_is_refused_naming_it(lms_client: Client) -> None:
    header = '{"lms_callback_url": "http://127.0.0.1:9/cb\\ud800", "lms_key": "k", "queue_name": "test-123"}'
    assert post_submit(lms_client, header) == {
        "return_code": 1,
        "content": "'xqueue_header' key 'lms_callback_url' contains a lone surrogate (U+D800), which is not accepted",
    }
    assert_nothing_stored()


def test_submit_with_a_lone_surrogate_in_the_lms_key_is_refused_naming_it(lms_client: Client) -> None:
    header = '{"lms_callback_url": "http://127.0.0.1:9/cb", "lms_key": "\\udfff", "queue_name": "test-123"}'
    assert post_submit(lms_client, header) == {
        "return_code": 1,
        "content": "'xqueue_header' key 'lms_key' contains a lone surrogate (U+DFFF), which is not accepted",
    }
    assert_nothing_stored()


def test_a_surrogate_pair_is_one_character_and_is_stored_faithfully(lms_client: Client) -> None:
    header = '{"lms_callback_url": "http://127.0.0.1:9/cb", "lms_key": "\\ud83d\\ude00", "queue_name": "test-123"}'
    assert post_submit(lms_client, header, body="caf\u00e9 \U0001f600") == {"return_code": 0, "content": "1"}
    submission = Submission.objects.get()
    assert (submission.lms_key, submission.body, submission.lms_header) == (
        "\U0001f600",
        "caf\u00e9 \U0001f600",
        header,
    )


# --- Files where fields were expected -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["username", "password"])
def test_login_with_a_file_part_for_a_credential_is_insufficient_login_info(lms_user: Any, field: str) -> None:
    data: dict[str, Any] = {"username": "lms", "password": LMS_PASSWORD}
    data[field] = SimpleUploadedFile("credential.txt", data[field].encode())
    reply = envelope(Client().post("/xqueue/login/", data))
    assert reply == {"return_code": 1, "content": "Insufficient login info"}


@pytest.mark.parametrize("field", ["xqueue_header", "xqueue_body"])
def test_submit_with_a_file_part_for_a_field_is_an_invalid_format(lms_client: Client, field: str) -> None:
    data: dict[str, Any] = {"xqueue_header": lms_header(CALLBACK), "xqueue_body": "answer"}
    data[field] = SimpleUploadedFile("part.txt", data[field].encode())
    reply = envelope(lms_client.post("/xqueue/submit/", data))
    assert reply == {"return_code": 1, "content": "Queue request has invalid format"}
    assert_nothing_stored()


# --- submission_id and submission_key -------------------------------------------------------------------


@pytest.mark.parametrize("submission_id", ["\u00b2", "\u2460", "\u0663", "1\u00b2", "9" * 5000, "\uff11"])
def test_put_result_with_a_non_ascii_or_5000_digit_submission_id_is_an_incorrect_reply_format(
    grader_client: Client, submission_id: str
) -> None:
    header = json.dumps({"submission_id": submission_id, "submission_key": "k"})
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": "{}"}))
    assert reply == {"return_code": 1, "content": "Incorrect reply format"}


def test_put_result_with_a_5000_digit_json_number_is_an_incorrect_reply_format(grader_client: Client) -> None:
    header = '{"submission_id": ' + "9" * 5000 + ', "submission_key": "k"}'
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": "{}"}))
    assert reply == {"return_code": 1, "content": "Incorrect reply format"}


def test_put_result_with_a_non_ascii_key_for_an_answered_submission_is_an_incorrect_key(
    grader_client: Client, queue: Queue, lms_user: Any
) -> None:
    submit(queue, lms_user)
    content = json.loads(envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))["content"])
    grade = '{"correct": true, "score": 1, "msg": "ok"}'
    ok = envelope(
        grader_client.post("/xqueue/put_result/", {"xqueue_header": content["xqueue_header"], "xqueue_body": grade})
    )
    assert ok == {"return_code": 0, "content": ""}
    submission_id = json.loads(content["xqueue_header"])["submission_id"]
    header = json.dumps({"submission_id": submission_id, "submission_key": "cl\u00e9"})
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": grade}))
    assert reply == {"return_code": 1, "content": "Incorrect key for submission"}


# --- Query strings over Django's redirect limit ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/xqueue/submit/", "/xqueue/get_queuelen/", "/xqueue/get_submission/"])
def test_an_unauthenticated_request_with_a_query_string_over_16_kib_still_gets_the_302(path: str) -> None:
    response = Client().get(path + "?queue_name=" + "q" * 20_000)
    assert response.status_code == 302
    assert response["Location"] == f"/xqueue/login/?next={path}"


def test_an_unauthenticated_request_with_a_short_query_string_keeps_it_in_next() -> None:
    response = Client().get("/xqueue/get_queuelen/?queue_name=a%20b")
    assert response.status_code == 302
    assert response["Location"] == "/xqueue/login/?next=/xqueue/get_queuelen/%3Fqueue_name%3Da%2520b"


def test_refusals_leave_the_media_folder_empty_even_with_files_attached(lms_client: Client) -> None:
    # A refusal after the files were parsed (unknown queue) must not leave them behind either.
    header = json.dumps({"lms_callback_url": CALLBACK, "lms_key": "k", "queue_name": "nope"})
    reply = post_submit(lms_client, header, answer=SimpleUploadedFile("a.py", b"x"))
    assert reply == {"return_code": 1, "content": "Queue 'nope' not found"}
    assert_nothing_stored()


def test_a_head_request_to_get_submission_leases_nothing(grader_client: Client, queue: Queue, lms_user: Any) -> None:
    submission = submit(queue, lms_user)
    response = grader_client.head("/xqueue/get_submission/?queue_name=test-123")
    assert response.status_code == 200
    submission.refresh_from_db()
    assert (submission.status, submission.attempts) == (Status.QUEUED, 0)
    assert list(submission.events.values_list("to_status", flat=True)) == [Status.QUEUED]
