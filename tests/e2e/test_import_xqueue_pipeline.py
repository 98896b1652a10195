"""import_xqueue, then the pipeline: a real Celery worker, a real HTTP LMS, a grader over real HTTP."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from grading.models import Queue, Role, Status, Submission
from tests.conftest import GRADER_PASSWORD, fast_pipeline, make_account
from tests.lms import FakeLMS
from tests.support.waiting import wait_for
from tests.xqclient import XQueueClient, grade
from tests.xqueuedb import xqueue_database

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]


def test_imported_work_ends_in_exactly_one_delivery_each_and_graded_rows_are_not_regraded(
    live_server: Any, celery_worker_app: Any, fake_lms: FakeLMS, settings: Any
) -> None:
    fast_pipeline(settings)
    queue = Queue.objects.create(name="python-101")
    make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)
    t0 = datetime(2026, 11, 30, 8, 0, 0)
    with xqueue_database() as xq:
        headers: dict[str, str] = {}
        rows = []
        for student in range(1, 41):
            url = fake_lms.callback_url(student)
            headers[url] = json.dumps(
                {"lms_callback_url": url, "lms_key": f"key-{student}", "queue_name": "python-101"}
            )
            graded = student > 20  # 20 waiting, then 20 that xqueue graded but never got to the LMS
            reply = grade(True, student / 100) if graded else ""
            returned = t0 + timedelta(minutes=2) if graded else None
            rows.append(
                ("python-101", headers[url], url, f'{{"student_response": "{student}"}}', t0, None, returned, reply)
            )
        xq.insert_many(rows)
        call_command("import_xqueue", "--source", xq.url, stdout=StringIO(), stderr=StringIO())

    # The 20 graded ones reach the LMS with no grader involved.
    wait_for(lambda: len(fake_lms.delivered()) == 20, what="the imported grades")
    first = {cb.header: cb.body for cb in fake_lms.delivered()}
    assert sorted(first) == sorted(headers[fake_lms.callback_url(s)] for s in range(21, 41))
    assert all(first[headers[fake_lms.callback_url(s)]] == grade(True, s / 100) for s in range(21, 41))

    # A grader then gets the 20 waiting ones, oldest first, and nothing else.
    watcher = XQueueClient(live_server.url, "grader", GRADER_PASSWORD)
    handed_out = []
    while (reply := watcher.get_submission("python-101"))["return_code"] == 0:
        content = json.loads(reply["content"])
        handed_out.append(json.loads(content["xqueue_body"])["student_response"])
        assert watcher.put_result(content["xqueue_header"], grade(False, 0.0))["return_code"] == 0
    assert reply == {"return_code": 1, "content": "Queue 'python-101' is empty"}
    assert handed_out == [str(s) for s in range(1, 21)]

    wait_for(lambda: Submission.objects.filter(status=Status.DELIVERED).count() == 40, what="40 delivered")
    time.sleep(0.3)
    assert len(fake_lms.callbacks) == 40  # each exactly once, none retried
    assert sorted(cb.header for cb in fake_lms.callbacks) == sorted(headers.values())
