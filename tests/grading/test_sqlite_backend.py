"""The embedded SQLite backend: a write transaction holds the writers' lock file from BEGIN to its end, so that
other writers (threads and processes) queue on it instead of polling SQLite's lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from grading.models import Queue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_writer() -> Iterator[int]:
    """The writers' lock file opened as another connection would open it."""
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        pytest.skip("the lock file is the embedded SQLite backend's")
    fd = os.open(f"{connection.settings_dict['NAME']}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def may_write(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_a_write_transaction_holds_the_writers_lock_until_it_commits(other_writer: int) -> None:
    assert may_write(other_writer)
    with transaction.atomic():
        Queue.objects.create(name="turns")
        assert not may_write(other_writer)
        with transaction.atomic():  # a savepoint keeps the turn
            Queue.objects.filter(name="turns").update(lease_seconds=5)
        assert not may_write(other_writer)
    assert may_write(other_writer)
    assert Queue.objects.get(name="turns").lease_seconds == 5


def test_a_rolled_back_transaction_gives_its_turn_back(other_writer: int) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Queue.objects.create(name="turns")
        assert not may_write(other_writer)
        raise RuntimeError("give up")
    assert may_write(other_writer)
    assert not Queue.objects.filter(name="turns").exists()
    # A write in autocommit takes its turn for the statement only.
    Queue.objects.create(name="autocommit")
    assert may_write(other_writer)
