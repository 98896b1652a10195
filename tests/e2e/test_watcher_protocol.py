"""The protocol over real HTTP (live server), driven the way xqueue-watcher and the LMS drive it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.sessions.models import Session

from grading.models import Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD
from tests.xqclient import XQueueClient, grade, lms_body

pytestmark = pytest.mark.django_db(transaction=True)


def header(n: int) -> str:
    return json.dumps(
        {
            "lms_callback_url": f"http://127.0.0.1:9/courses/c/xqueue/{n}/p/score_update",
            "lms_key": f"k{n}",
            "queue_name": "test-123",
        }
    )


@pytest.mark.parametrize("csrf_prelude", [False, True], ids=["old-watcher", "2026-watcher"])
def test_watcher_logs_in_pulls_and_puts_result(
    live_server: Any, lms_user: Any, grader_user: Any, csrf_prelude: bool
) -> None:
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    for n in range(3):
        assert lms.submit(header(n), lms_body(str(n)))["return_code"] == 0
    watcher = XQueueClient(live_server.url, "grader", GRADER_PASSWORD, csrf_prelude=csrf_prelude)
    assert watcher.login() == {"return_code": 0, "content": "Logged in"}
    if csrf_prelude:
        assert watcher.session.cookies.get("csrftoken")
    assert watcher.get_queuelen("test-123") == {"return_code": 0, "content": 3}
    for n in range(3):
        reply = watcher.get_submission("test-123")
        content = json.loads(reply["content"])
        assert json.loads(content["xqueue_body"])["student_response"] == str(n)
        assert watcher.put_result(content["xqueue_header"], grade()) == {"return_code": 0, "content": ""}
    assert watcher.get_submission("test-123") == {"return_code": 1, "content": "Queue 'test-123' is empty"}
    assert watcher.logins == 1
    assert Submission.objects.filter(status=Status.QUEUED).count() == 0


def test_watcher_logs_in_again_after_a_302_when_its_session_is_gone(
    live_server: Any, lms_user: Any, grader_user: Any
) -> None:
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    lms.submit(header(1), lms_body())
    watcher = XQueueClient(live_server.url, "grader", GRADER_PASSWORD)
    watcher.login()
    Session.objects.all().delete()  # sessions expire or are flushed by the operator
    reply = watcher.get_submission("test-123")
    assert reply["return_code"] == 0
    assert watcher.logins == 2
    content = json.loads(reply["content"])
    Session.objects.all().delete()
    assert watcher.put_result(content["xqueue_header"], grade()) == {"return_code": 0, "content": ""}
    assert watcher.logins == 3


def test_redirect_for_anonymous_call_is_relative_and_keeps_the_query(live_server: Any, grader_user: Any) -> None:
    import requests

    response = requests.get(
        f"{live_server.url}/xqueue/get_submission/?queue_name=test-123&block=true",
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    assert (
        response.headers["Location"]
        == "/xqueue/login/?next=/xqueue/get_submission/%3Fqueue_name%3Dtest-123%26block%3Dtrue"
    )
    followed = requests.get(f"{live_server.url}/xqueue/get_submission/?queue_name=test-123", timeout=5)
    assert followed.json() == {"return_code": 1, "content": "login_required"}
