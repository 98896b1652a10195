"""A worker killed in the middle of an LMS delivery: the grade still arrives, once, after recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from grading import lifecycle
from grading.models import Status, Submission
from tests.e2e.test_pipeline import wait_for
from tests.lms import Callback, FakeLMS
from tests.processes import database_url
from tests.tasks.test_delivery import graded_submission, status_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]

ROOT = Path(__file__).resolve().parents[2]


def start_worker_process() -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GRADEQUEUE_DEV": "1",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "GRADEQUEUE_CELERY_QUEUE": django_settings.CELERY_TASK_DEFAULT_QUEUE,
        "GRADEQUEUE_DELIVERY_TIMEOUT": "1",
        "GRADEQUEUE_SWEEP_GRACE_SECONDS": "0",
    }
    options = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if "data_folder_in" in options:
        env["GRADEQUEUE_BROKER_DIR"] = options["data_folder_in"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )


def test_worker_killed_during_delivery_grade_delivered_once_after_recovery(
    settings: Any, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "DELIVERY_TIMEOUT": 1.0, "SWEEP_GRACE_SECONDS": 0.0}
    received, killed = threading.Event(), threading.Event()

    def stall_first(callback: Callback) -> None:
        if not received.is_set():
            received.set()
            killed.wait(30)

    # The stalled first request never completes from the LMS's side: it answers 503 after the kill.
    lms = FakeLMS(script=[503], on_request=stall_first).start()
    from celery_app import app

    app.control.purge()
    first = start_worker_process()
    second = None
    try:
        submission = graded_submission(queue, lms_user, grader_user, lms.callback_url())
        assert received.wait(60), "the worker never called the LMS"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed.set()
        assert status_of(submission) == Status.GRADED

        second = start_worker_process()

        def delivered() -> bool:
            lifecycle.sweep_followups()  # what beat runs periodically
            return status_of(submission) == Status.DELIVERED

        wait_for(delivered, timeout=60, what="delivery after the worker was killed")
        time.sleep(1.0)
        assert len(lms.delivered()) == 1
        assert Submission.objects.get(pk=submission.pk).events.filter(to_status=Status.DELIVERED).count() == 1
    finally:
        killed.set()
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        lms.stop()
