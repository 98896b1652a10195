"""The database drops the worker's connection while the LMS answers a POST: the answer is recorded once the
database is back, and the grade is not posted again. The worker reaches PostgreSQL (or MySQL/MariaDB)
through a real TCP proxy that the test cuts."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from grading import lifecycle
from grading.models import Status, Submission
from tests.lms import Callback, FakeLMS
from tests.processes import database_url
from tests.support.services import start_worker_process
from tests.support.states import graded_submission, status_of
from tests.support.waiting import wait_for
from tests.tcpproxy import TcpProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.celery,
    pytest.mark.skipif(
        "sqlite" in __import__("django.conf").conf.settings.DATABASES["default"]["ENGINE"],
        reason="a dropped database connection needs a database server",
    ),
]


def test_an_lms_answer_that_meets_a_dropped_database_connection_is_recorded_when_it_is_back(
    settings: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "SWEEP_GRACE_SECONDS": 0.0}
    db = connection.settings_dict
    host, port = db["HOST"] or "127.0.0.1", int(db["PORT"] or (5432 if connection.vendor == "postgresql" else 3306))
    proxy = TcpProxy(host, port)
    proxied = database_url().replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    assert proxied != database_url()

    def cut_while_answering(callback: Callback) -> None:
        # The database goes away while the LMS takes the grade, and comes back 2 s later.
        if len(lms.callbacks) == 1:
            proxy.cut()
            threading.Timer(2.0, proxy.restore).start()

    lms = FakeLMS(on_request=cut_while_answering).start()
    from celery_app import app

    app.control.purge()
    submission = graded_submission(queue, lms_user, grader_user, lms.callback_url())
    # A 5 s timeout: the claim holds 11 s, well past the outage, so the sweep below may run at any moment.
    worker = start_worker_process(delivery_timeout="5", database=proxied)
    try:

        def delivered() -> bool:
            lifecycle.sweep_followups()  # what beat runs periodically
            return status_of(submission) == Status.DELIVERED

        wait_for(delivered, timeout=60, what="the grade recorded as delivered after the outage")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            lifecycle.sweep_followups()
            time.sleep(0.2)
        assert [cb.status for cb in lms.callbacks] == [200]
        events = Submission.objects.get(pk=submission.pk).events.filter(created_at__gte=lms_user.date_joined)
        assert list(events.filter(to_status=Status.DELIVERED).values_list("details__attempt", flat=True)) == [1]
        assert not events.filter(reason="late_answer").exists()
        assert proxy.connections >= 2  # the worker connected again after the cut
    finally:
        worker.terminate()
        worker.wait(15)
        proxy.stop()
        lms.stop()
