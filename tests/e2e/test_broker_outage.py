"""A broker that takes connections and never answers (a hung broker, or packets dropped after the
handshake), under the production server: put_result is accepted and committed, only the first publish of an
outage waits for the connection timeout, the log says so once, and the periodic sweep finds the work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grading import lifecycle
from grading.models import Queue, Role, Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, make_account
from tests.support.services import running_server
from tests.tcpproxy import SilentListener
from tests.xqclient import XQueueClient, grade, lms_body

REPLIES = 10


@pytest.mark.django_db(transaction=True)
def test_put_results_to_a_hung_broker_pay_its_timeout_once_and_are_all_kept_for_the_sweep(
    settings: Any, tmp_path: Path
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    queue = Queue.objects.create(name="served")
    make_account("lms", LMS_PASSWORD, Role.LMS, queue)
    make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)
    broker = SilentListener()
    log_path = tmp_path / "server.log"
    try:
        with (
            open(log_path, "wb") as log,
            running_server(
                str(settings.MEDIA_ROOT),
                log=log,
                CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{broker.port}//",
                GRADEQUEUE_BROKER_DIR=None,
                GRADEQUEUE_BROKER_RETRY_SECONDS="600",
                CELERY_BROKER_CONNECTION_TIMEOUT="1",
                WEB_WORKERS="1",
            ) as (base_url, _process),
        ):
            lms = XQueueClient(base_url, "lms", LMS_PASSWORD, timeout=30)
            grader = XQueueClient(base_url, "grader", GRADER_PASSWORD, timeout=30)
            for student in range(REPLIES):
                header = {
                    "lms_callback_url": f"http://127.0.0.1:9/courses/c/xqueue/{student}/p/score_update",
                    "lms_key": f"key-{student}",
                    "queue_name": "served",
                }
                assert lms.submit(header, lms_body())["return_code"] == 0
                pulled = json.loads(grader.get_submission("served")["content"])
                reply = grader.put_result(pulled["xqueue_header"], grade())
                assert reply == {"return_code": 0, "content": ""}
            connections = broker.connections
    finally:
        broker.stop()

    # Every reply is committed, though no task message left.
    assert Submission.objects.filter(status=Status.RETURNED).count() == REPLIES
    # One publish tried (a connection, and its one retry); the nine after it skipped the broker.
    assert 1 <= connections <= 2, connections
    log = log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    down = [line for line in log.splitlines() if "broker unavailable" in line]
    assert len(down) == 1, down
    # The safety net: with a broker again (the test's own), the sweep asks for the scoring of all of them.
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "SWEEP_GRACE_SECONDS": 0.0}
    assert lifecycle.sweep_followups()["score"] == REPLIES
