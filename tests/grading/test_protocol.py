"""One test per row of the wire contract's tables, through Django's test client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from grading.models import Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, lms_header, submit
from tests.xqclient import grade, lms_body

pytestmark = pytest.mark.django_db

CALLBACK = "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update"


def envelope(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def raw(response: Any) -> bytes:
    assert response.status_code == 200
    return response.content


# --- §1 envelope ------------------------------------------------------------------------------------


def test_envelope_uses_json_dumps_default_separators_and_integer_return_code() -> None:
    assert raw(Client().get("/xqueue/status/")) == b'{"return_code": 0, "content": "OK"}'


@pytest.mark.parametrize("accept", ["text/html", "application/xml;q=0.9", "*/*", "nonsense"])
def test_every_reply_is_the_json_envelope_whatever_the_client_accepts(grader_client: Client, accept: str) -> None:
    response = grader_client.get("/xqueue/get_queuelen/?queue_name=test-123", HTTP_ACCEPT=accept)
    assert raw(response) == b'{"return_code": 0, "content": 0}'
    assert response["Content-Type"] == "application/json; charset=utf-8"


# --- §2 login, logout, status -----------------------------------------------------------------------


def test_login_get_asks_for_login_and_sets_csrf_cookie() -> None:
    response = Client().get("/xqueue/login/")
    assert raw(response) == b'{"return_code": 1, "content": "login_required"}'
    assert "csrftoken" in response.cookies


@pytest.mark.parametrize("method", ["put", "delete", "patch", "options"])
def test_login_any_non_post_asks_for_login(method: str) -> None:
    response = getattr(Client(), method)("/xqueue/login/")
    assert envelope(response) == {"return_code": 1, "content": "login_required"}


@pytest.mark.parametrize("data", [{}, {"username": "lms"}, {"password": "x"}, {"username": "", "password": "x"}])
def test_login_without_username_or_password_is_insufficient(lms_user: Any, data: dict[str, str]) -> None:
    assert envelope(Client().post("/xqueue/login/", data)) == {
        "return_code": 1,
        "content": "Insufficient login info",
    }


def test_login_with_wrong_credentials(lms_user: Any) -> None:
    reply = envelope(Client().post("/xqueue/login/", {"username": "lms", "password": "wrong"}))
    assert reply == {"return_code": 1, "content": "Incorrect login credentials"}


def test_login_with_valid_credentials_sets_session(lms_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/xqueue/login/", {"username": "lms", "password": LMS_PASSWORD})
    assert raw(response) == b'{"return_code": 0, "content": "Logged in"}'
    assert "sessionid" in response.cookies


def test_login_with_an_old_session_cookie_succeeds(lms_user: Any, grader_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.post("/xqueue/login/", {"username": "grader", "password": GRADER_PASSWORD})
    reply = envelope(client.post("/xqueue/login/", {"username": "lms", "password": LMS_PASSWORD}))
    assert reply == {"return_code": 0, "content": "Logged in"}
    reply = envelope(client.post("/xqueue/login/", {"username": "lms", "password": LMS_PASSWORD}))
    assert reply == {"return_code": 0, "content": "Logged in"}


def test_login_with_csrf_token_and_referer_like_2026_watchers(grader_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    token = client.get("/xqueue/login/").cookies["csrftoken"].value
    response = client.post(
        "/xqueue/login/",
        {"username": "grader", "password": GRADER_PASSWORD},
        headers={"X-CSRFToken": token, "Referer": "https://xqueue.example.org/"},
        secure=True,
    )
    assert envelope(response) == {"return_code": 0, "content": "Logged in"}


@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_logout_any_method_says_goodbye(lms_client: Client, method: str) -> None:
    assert raw(getattr(lms_client, method)("/xqueue/logout/")) == b'{"return_code": 0, "content": "Goodbye"}'
    # The session is gone: the next call is redirected to the login page.
    assert lms_client.get("/xqueue/get_queuelen/?queue_name=test-123").status_code == 302


def test_status_needs_no_login() -> None:
    assert envelope(Client().get("/xqueue/status/")) == {"return_code": 0, "content": "OK"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/xqueue/submit/"),
        ("get", "/xqueue/get_queuelen/?queue_name=test-123"),
        ("get", "/xqueue/get_submission/?queue_name=test-123&block=true"),
        ("post", "/xqueue/put_result/"),
        ("get", "/xqueue/submit/"),
    ],
)
def test_unauthenticated_calls_are_redirected_to_login_with_next(method: str, path: str) -> None:
    response = getattr(Client(), method)(path)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/xqueue/login/?next=")
    from urllib.parse import parse_qs, urlsplit

    assert parse_qs(urlsplit(location).query)["next"] == [path]


def test_paths_without_trailing_slash_are_served_not_redirected(lms_client: Client, queue: Any) -> None:
    response = lms_client.post("/xqueue/submit", {"xqueue_header": lms_header(CALLBACK), "xqueue_body": "x"})
    assert envelope(response) == {"return_code": 0, "content": "1"}


# --- §3 submit ----------------------------------------------------------------------------------------


def test_submit_requires_post(lms_client: Client) -> None:
    reply = envelope(lms_client.get("/xqueue/submit/"))
    assert reply == {"return_code": 1, "content": "Queue requests should use HTTP POST"}


@pytest.mark.parametrize(
    "data",
    [
        {"xqueue_body": "x"},
        {"xqueue_header": lms_header(CALLBACK)},
        {"xqueue_header": "not json", "xqueue_body": "x"},
        {"xqueue_header": "[1, 2]", "xqueue_body": "x"},
        {"xqueue_header": '"a string"', "xqueue_body": "x"},
        {"xqueue_header": json.dumps({"lms_key": "k", "queue_name": "test-123"}), "xqueue_body": "x"},
        {
            "xqueue_header": json.dumps({"lms_callback_url": CALLBACK, "queue_name": "test-123"}),
            "xqueue_body": "x",
        },
        {"xqueue_header": json.dumps({"lms_callback_url": CALLBACK, "lms_key": "k"}), "xqueue_body": "x"},
        {
            "xqueue_header": json.dumps({"lms_callback_url": 5, "lms_key": "k", "queue_name": "q"}),
            "xqueue_body": "x",
        },
    ],
)
def test_submit_with_invalid_format(lms_client: Client, data: dict[str, str]) -> None:
    reply = envelope(lms_client.post("/xqueue/submit/", data))
    assert reply == {"return_code": 1, "content": "Queue request has invalid format"}
    assert not Submission.objects.exists()


def test_submit_to_unknown_queue(lms_client: Client) -> None:
    data = {"xqueue_header": lms_header(CALLBACK, queue_name="nope"), "xqueue_body": "x"}
    assert envelope(lms_client.post("/xqueue/submit/", data)) == {
        "return_code": 1,
        "content": "Queue 'nope' not found",
    }


def test_submit_to_a_queue_not_granted_looks_like_unknown_queue(lms_client: Client, other_queue: Any) -> None:
    data = {"xqueue_header": lms_header(CALLBACK, queue_name="other-queue"), "xqueue_body": "x"}
    reply = envelope(lms_client.post("/xqueue/submit/", data))
    assert reply == {"return_code": 1, "content": "Queue 'other-queue' not found"}


def test_grader_account_cannot_submit(grader_client: Client) -> None:
    data = {"xqueue_header": lms_header(CALLBACK), "xqueue_body": "x"}
    reply = envelope(grader_client.post("/xqueue/submit/", data))
    assert reply == {"return_code": 1, "content": "Queue 'test-123' not found"}


def test_submit_accepted_returns_queue_length_as_string(lms_client: Client, queue: Any) -> None:
    long_url = CALLBACK + "/" + "x" * 300
    header = json.dumps({"lms_callback_url": long_url, "lms_key": "k1", "queue_name": "test-123", "extra": 1})
    response = lms_client.post("/xqueue/submit/", {"xqueue_header": header, "xqueue_body": lms_body()})
    assert raw(response) == b'{"return_code": 0, "content": "1"}'
    other = {"xqueue_header": lms_header(CALLBACK + "2"), "xqueue_body": "x"}
    assert envelope(lms_client.post("/xqueue/submit/", other)) == {"return_code": 0, "content": "2"}
    stored = Submission.objects.get(lms_callback_url=long_url)
    assert stored.lms_header == header
    assert stored.lms_key == "k1"
    assert stored.body == lms_body()
    assert stored.status == Status.QUEUED
    assert list(stored.events.values_list("from_status", "to_status")) == [("", "queued")]


def test_new_submission_supersedes_unfinished_ones_for_same_callback(
    lms_client: Client, grader_client: Client, queue: Any
) -> None:
    first = {"xqueue_header": lms_header(CALLBACK, lms_key="a"), "xqueue_body": "first"}
    lms_client.post("/xqueue/submit/", first)
    pulled = json.loads(envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))["content"])
    second = {"xqueue_header": lms_header(CALLBACK, lms_key="b"), "xqueue_body": "second"}
    assert envelope(lms_client.post("/xqueue/submit/", second))["content"] == "1"
    old = Submission.objects.get(body="first")
    assert old.status == Status.SUPERSEDED
    # A late grade for the superseded one is refused and never reaches the LMS.
    late = envelope(
        grader_client.post("/xqueue/put_result/", {"xqueue_header": pulled["xqueue_header"], "xqueue_body": grade()})
    )
    assert late == {"return_code": 1, "content": "Incorrect key for submission"}
    nxt = json.loads(envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))["content"])
    assert nxt["xqueue_body"] == "second"


def test_submit_with_files_keys_them_by_field_name(lms_client: Client, queue: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {
        "xqueue_header": lms_header(CALLBACK),
        "xqueue_body": "x",
        "answer.py": SimpleUploadedFile("answer.py", b"print(1)\n"),
    }
    assert envelope(lms_client.post("/xqueue/submit/", data))["return_code"] == 0
    assert list(Submission.objects.get().files) == ["answer.py"]


def test_submit_body_over_the_limit_is_refused_with_envelope(lms_client: Client, queue: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    data = {"xqueue_header": lms_header(CALLBACK), "xqueue_body": "x" * 5000}
    reply = envelope(lms_client.post("/xqueue/submit/", data))
    assert reply["return_code"] == 1
    assert "too large" in reply["content"]
    assert not Submission.objects.exists()


# --- §4 get_queuelen, get_submission -------------------------------------------------------------------


def test_get_queuelen_without_queue_name(grader_client: Client) -> None:
    reply = envelope(grader_client.get("/xqueue/get_queuelen/"))
    assert reply == {"return_code": 1, "content": "'get_queuelen' must provide parameter 'queue_name'"}


def test_get_queuelen_unknown_queue_lists_only_granted_queues(grader_client: Client, other_queue: Any) -> None:
    reply = envelope(grader_client.get("/xqueue/get_queuelen/?queue_name=nope"))
    assert reply == {"return_code": 1, "content": "Valid queue names are: test-123"}
    reply = envelope(grader_client.get("/xqueue/get_queuelen/?queue_name=other-queue"))
    assert reply == {"return_code": 1, "content": "Valid queue names are: test-123"}


def test_get_queuelen_counts_waiting_not_leased(grader_client: Client, queue: Any, lms_user: Any) -> None:
    for i in range(3):
        submit(queue, lms_user, callback_url=f"{CALLBACK}/{i}")
    assert raw(grader_client.get("/xqueue/get_queuelen/?queue_name=test-123")) == b'{"return_code": 0, "content": 3}'
    grader_client.get("/xqueue/get_submission/?queue_name=test-123")
    assert envelope(grader_client.get("/xqueue/get_queuelen/?queue_name=test-123"))["content"] == 2


def test_get_submission_without_queue_name(grader_client: Client) -> None:
    reply = envelope(grader_client.get("/xqueue/get_submission/"))
    assert reply == {"return_code": 1, "content": "'get_submission' must provide parameter 'queue_name'"}


def test_get_submission_unknown_queue(grader_client: Client, other_queue: Any) -> None:
    for name in ("nope", "other-queue"):
        reply = envelope(grader_client.get(f"/xqueue/get_submission/?queue_name={name}"))
        assert reply == {"return_code": 1, "content": f"Queue '{name}' not found"}


def test_lms_account_cannot_pull(lms_client: Client) -> None:
    reply = envelope(lms_client.get("/xqueue/get_submission/?queue_name=test-123"))
    assert reply == {"return_code": 1, "content": "Queue 'test-123' not found"}


def test_get_submission_from_empty_queue(grader_client: Client) -> None:
    reply = envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123&block=true"))
    assert reply == {"return_code": 1, "content": "Queue 'test-123' is empty"}


def test_get_submission_hands_out_oldest_first_with_string_fields(
    grader_client: Client, queue: Any, lms_user: Any
) -> None:
    first = submit(queue, lms_user, callback_url=CALLBACK + "/a", body=lms_body("a"))
    submit(queue, lms_user, callback_url=CALLBACK + "/b", body=lms_body("b"))
    reply = envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123&block=true"))
    assert reply["return_code"] == 0
    assert isinstance(reply["content"], str)
    content = json.loads(reply["content"])
    assert set(content) == {"xqueue_header", "xqueue_body", "xqueue_files"}
    assert all(isinstance(v, str) for v in content.values())
    header = json.loads(content["xqueue_header"])
    assert set(header) == {"submission_id", "submission_key"}
    assert header["submission_id"] == first.pk
    assert len(header["submission_key"]) >= 32
    assert content["xqueue_body"] == lms_body("a")
    assert content["xqueue_files"] == "{}"
    assert "lms_key" not in reply["content"]


# --- §5 put_result ------------------------------------------------------------------------------------


@pytest.fixture
def pulled(grader_client: Client, queue: Any, lms_user: Any) -> dict[str, Any]:
    submit(queue, lms_user, callback_url=CALLBACK, body=lms_body())
    return json.loads(envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))["content"])


def test_put_result_requires_post(grader_client: Client) -> None:
    reply = envelope(grader_client.get("/xqueue/put_result/"))
    assert reply == {"return_code": 1, "content": "'put_result' must use HTTP POST"}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"xqueue_body": grade()},
        {"xqueue_header": json.dumps({"submission_id": 1, "submission_key": "k"})},
        {"xqueue_header": "not json", "xqueue_body": grade()},
        {"xqueue_header": "[1]", "xqueue_body": grade()},
        {"xqueue_header": json.dumps({"submission_key": "k"}), "xqueue_body": grade()},
        {"xqueue_header": json.dumps({"submission_id": 1}), "xqueue_body": grade()},
        {
            "xqueue_header": json.dumps({"submission_id": "abc", "submission_key": "k"}),
            "xqueue_body": grade(),
        },
        {"xqueue_header": json.dumps({"submission_id": 1.5, "submission_key": "k"}), "xqueue_body": grade()},
        {"xqueue_header": json.dumps({"submission_id": None, "submission_key": "k"}), "xqueue_body": grade()},
        {"xqueue_header": json.dumps({"submission_id": True, "submission_key": "k"}), "xqueue_body": grade()},
        {
            "xqueue_header": json.dumps({"submission_id": 10**30, "submission_key": "k"}),
            "xqueue_body": grade(),
        },
    ],
)
def test_put_result_with_incorrect_format(grader_client: Client, data: dict[str, str]) -> None:
    assert envelope(grader_client.post("/xqueue/put_result/", data)) == {
        "return_code": 1,
        "content": "Incorrect reply format",
    }


def test_put_result_for_missing_submission(grader_client: Client) -> None:
    header = json.dumps({"submission_id": 999999, "submission_key": "k"})
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": grade()}))
    assert reply == {"return_code": 1, "content": "Submission does not exist"}


def test_put_result_with_wrong_key(grader_client: Client, pulled: dict[str, Any]) -> None:
    header = json.dumps(
        {"submission_id": json.loads(pulled["xqueue_header"])["submission_id"], "submission_key": "guessed"}
    )
    reply = envelope(grader_client.post("/xqueue/put_result/", {"xqueue_header": header, "xqueue_body": grade()}))
    assert reply == {"return_code": 1, "content": "Incorrect key for submission"}


def test_put_result_accepted(grader_client: Client, pulled: dict[str, Any]) -> None:
    response = grader_client.post(
        "/xqueue/put_result/", {"xqueue_header": pulled["xqueue_header"], "xqueue_body": grade()}
    )
    assert raw(response) == b'{"return_code": 0, "content": ""}'
    submission = Submission.objects.get()
    assert submission.status == Status.RETURNED
    assert submission.grader_reply == grade()


def test_identical_put_result_twice_is_a_no_op(grader_client: Client, pulled: dict[str, Any]) -> None:
    data = {"xqueue_header": pulled["xqueue_header"], "xqueue_body": grade()}
    assert envelope(grader_client.post("/xqueue/put_result/", data))["return_code"] == 0
    assert envelope(grader_client.post("/xqueue/put_result/", data))["return_code"] == 0
    submission = Submission.objects.get()
    assert submission.events.filter(to_status=Status.RETURNED).count() == 1
    # A different reply on the same key is not a duplicate and does not overwrite the first.
    other = {"xqueue_header": pulled["xqueue_header"], "xqueue_body": grade(False, 0)}
    assert envelope(grader_client.post("/xqueue/put_result/", other)) == {
        "return_code": 1,
        "content": "Incorrect key for submission",
    }
    submission.refresh_from_db()
    assert submission.grader_reply == grade()


def test_grader_of_another_queue_cannot_put_result(pulled: dict[str, Any], other_queue: Any) -> None:
    from tests.conftest import make_account

    stranger = make_account("stranger", "pw-stranger-1", "grader", other_queue)
    client = Client()
    client.force_login(stranger)
    reply = envelope(
        client.post("/xqueue/put_result/", {"xqueue_header": pulled["xqueue_header"], "xqueue_body": grade()})
    )
    assert reply == {"return_code": 1, "content": "Submission does not exist"}


@pytest.mark.parametrize("method", ["put", "delete", "patch", "options"])
def test_unknown_methods_get_an_envelope_not_an_error(grader_client: Client, method: str) -> None:
    for path in (
        "/xqueue/submit/",
        "/xqueue/put_result/",
        "/xqueue/get_submission/?queue_name=test-123",
        "/xqueue/get_queuelen/?queue_name=test-123",
    ):
        response = getattr(grader_client, method)(path)
        assert response.status_code == 200
        assert json.loads(response.content)["return_code"] in (0, 1)


@pytest.mark.parametrize("mode", ["celery", "http"])
def test_polling_a_push_mode_queue_finds_it_empty_and_leases_nothing(
    grader_client: Client, queue: Any, lms_user: Any, mode: str
) -> None:
    submit(queue, lms_user, callback_url=CALLBACK)
    queue.mode = mode
    queue.save()
    reply = envelope(grader_client.get("/xqueue/get_submission/?queue_name=test-123"))
    assert reply == {"return_code": 1, "content": "Queue 'test-123' is empty"}
    assert Submission.objects.get().status == Status.QUEUED
