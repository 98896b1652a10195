"""The whole pipeline over real HTTP with a real Celery worker and a real HTTP server as the LMS."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from grading.models import Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD
from tests.lms import FakeLMS
from tests.support.waiting import wait_for
from tests.xqclient import XQueueClient, grade, lms_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]


def test_submit_pull_put_result_reaches_the_lms_exactly_once(
    live_server: Any, celery_worker_app: Any, fake_lms: FakeLMS, lms_user: Any, grader_user: Any
) -> None:
    lms = XQueueClient(live_server.url, "lms", LMS_PASSWORD)
    watcher = XQueueClient(live_server.url, "grader", GRADER_PASSWORD, csrf_prelude=True)
    header = json.dumps({"lms_callback_url": fake_lms.callback_url(), "lms_key": "lms-key-7", "queue_name": "test-123"})
    assert lms.submit(header, lms_body()) == {"return_code": 0, "content": "1"}
    assert lms.logins == 1  # the first submit was redirected to the login page, then resent

    reply = watcher.get_submission("test-123")
    assert reply["return_code"] == 0
    content = json.loads(reply["content"])
    assert watcher.put_result(content["xqueue_header"], grade(True, 1.0)) == {"return_code": 0, "content": ""}

    wait_for(lambda: fake_lms.delivered(), what="the LMS callback")
    submission = wait_for(lambda: Submission.objects.filter(status=Status.DELIVERED).first(), what="delivered")
    time.sleep(0.3)
    assert len(fake_lms.callbacks) == 1
    callback = fake_lms.callbacks[0]
    assert callback.header == header
    assert callback.body == grade(True, 1.0)
    assert list(submission.events.values_list("to_status", flat=True)) == [
        "queued",
        "pulled",
        "returned",
        "graded",
        "delivered",
    ]
