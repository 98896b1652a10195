from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from grading import lifecycle
from grading.models import Queue, QueueGrant, Role
from tests.lms import FakeLMS

LMS_PASSWORD = "lms-password-1"
GRADER_PASSWORD = "grader-password-1"


def make_account(username: str, password: str, role: str, *queues: Queue) -> Any:
    user = get_user_model().objects.create_user(username=username, password=password)
    for queue in queues:
        QueueGrant.objects.create(user=user, queue=queue, role=role)
    return user


@pytest.fixture
def queue(db: Any) -> Queue:
    return Queue.objects.create(name="test-123")


@pytest.fixture
def other_queue(db: Any) -> Queue:
    return Queue.objects.create(name="other-queue")


@pytest.fixture
def lms_user(queue: Queue) -> Any:
    return make_account("lms", LMS_PASSWORD, Role.LMS, queue)


@pytest.fixture
def grader_user(queue: Queue) -> Any:
    return make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)


@pytest.fixture
def lms_client(lms_user: Any) -> Client:
    client = Client()
    client.force_login(lms_user)
    return client


@pytest.fixture
def grader_client(grader_user: Any) -> Client:
    client = Client()
    client.force_login(grader_user)
    return client


@pytest.fixture
def fake_lms() -> Iterator[FakeLMS]:
    lms = FakeLMS().start()
    yield lms
    lms.stop()


def lms_header(callback_url: str, queue_name: str = "test-123", lms_key: str = "key-1") -> str:
    return json.dumps({"lms_callback_url": callback_url, "lms_key": lms_key, "queue_name": queue_name})


def submit(
    queue: Queue,
    user: Any,
    callback_url: str = "http://127.0.0.1:9/cb",
    body: str = "{}",
    lms_key: str = "key-1",
) -> Any:
    submission, _ = lifecycle.submit(
        lifecycle.NewSubmission(
            queue=queue,
            lms_header=lms_header(callback_url, queue.name, lms_key),
            lms_callback_url=callback_url,
            lms_key=lms_key,
            body=body,
            files={},
        ),
        user,
    )
    return submission


@pytest.fixture(scope="module")
def celery_worker_app(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) on the configured broker, in this process, for one test module.

    The worker's threads use the test database; tests that need it are ``transaction=True`` so that what
    they commit is visible to it. Module scope lets other modules run workers of their own (subprocesses).
    """
    from celery.contrib.testing.worker import start_worker

    from celery_app import app

    with django_db_blocker.unblock():
        app.control.purge()
    with start_worker(
        app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=15
    ):
        yield app


def fast_pipeline(settings: Any, **overrides: Any) -> None:
    """Shrink the delivery back-off, horizon and sweep grace so that pipeline tests run in seconds."""
    settings.GRADEQUEUE = {
        **settings.GRADEQUEUE,
        "DELIVERY_BACKOFF_BASE": 0.05,
        "DELIVERY_BACKOFF_CAP": 0.4,
        "DELIVERY_TIMEOUT": 2.0,
        "SWEEP_GRACE_SECONDS": 0.0,
        **overrides,
    }


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    # PBKDF2's deliberate slowness buys nothing in tests; production keeps Django's default hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
