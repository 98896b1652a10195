"""Fixtures of the end-to-end tests: the production web server with its accounts, and a Celery grader's queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from grading.models import Queue, QueueMode, Role
from tests import broker
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, make_account
from tests.support.services import running_server


@pytest.fixture
def server(settings: Any) -> Iterator[str]:
    """gradequeue served as production serves it, on the test database, in its own process group."""
    with running_server(str(settings.MEDIA_ROOT)) as (base_url, _process):
        yield base_url


@pytest.fixture
def accounts(settings: Any) -> Queue:
    # The server process checks passwords with the production hashers, so these accounts use one of them.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    queue = Queue.objects.create(name="served")
    make_account("lms", LMS_PASSWORD, Role.LMS, queue)
    make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)
    return queue


@pytest.fixture
def grader_queue(request: Any) -> Iterator[Queue]:
    queue = Queue.objects.create(name=f"celery-{request.node.name[5:40]}", mode=QueueMode.CELERY)
    broker.purge(queue.name)
    yield queue
    broker.purge(queue.name)
