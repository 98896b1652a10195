"""get_submission on an empty queue waits briefly for work (GRADEQUEUE["EMPTY_POLL_WAIT"])."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from tests.conftest import submit

pytestmark = pytest.mark.django_db(transaction=True)


def wait_settings(settings: Any, wait: float, waiters: int = 2) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "EMPTY_POLL_WAIT": wait, "EMPTY_POLL_WAITERS": waiters}


class Poll(threading.Thread):
    """One get_submission in a thread of its own (as one of the web server's), timed."""

    def __init__(self, client: Client, queue_name: str) -> None:
        super().__init__()
        self.client, self.queue_name = client, queue_name
        self.reply: dict[str, Any] = {}
        self.elapsed = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            response = self.client.get("/xqueue/get_submission/", {"queue_name": self.queue_name})
            self.reply = json.loads(response.content)
        finally:
            self.elapsed = time.monotonic() - started
            connection.close()


def test_a_submission_arriving_during_the_wait_is_handed_out_by_that_request(
    settings: Any, grader_client: Client, queue: Any, lms_user: Any
) -> None:
    # The setting's maximum: a request that only looked again at the end of its wait would still be waiting
    # when the submission below has been committed and the short join has run out.
    wait_settings(settings, 0.8)
    poll = Poll(grader_client, queue.name)
    poll.start()
    time.sleep(0.1)
    assert poll.is_alive()  # waiting, not answered "empty"
    submission = submit(queue, lms_user, body="arrived")
    poll.join(5)
    assert poll.reply["return_code"] == 0
    content = json.loads(poll.reply["content"])
    assert json.loads(content["xqueue_header"])["submission_id"] == submission.pk
    assert content["xqueue_body"] == "arrived"


def test_an_empty_queue_is_reported_empty_after_the_wait(settings: Any, grader_client: Client, queue: Any) -> None:
    wait_settings(settings, 0.3)
    poll = Poll(grader_client, queue.name)
    poll.start()
    poll.join(5)
    assert poll.reply == {"return_code": 1, "content": f"Queue '{queue.name}' is empty"}
    assert poll.elapsed >= 0.3  # it waited (a loaded machine only makes this longer)


def test_beyond_the_waiters_limit_an_empty_queue_is_reported_at_once(
    settings: Any, grader_client: Client, queue: Any
) -> None:
    wait_settings(settings, 0.8, waiters=1)
    waiting = Poll(grader_client, queue.name)
    waiting.start()
    time.sleep(0.1)
    assert waiting.is_alive()
    second = Poll(grader_client, queue.name)
    second.start()
    second.join(5)
    # No thread to spare: the second poll was answered while the first was still waiting.
    first_still_waiting = waiting.is_alive()
    waiting.join(5)
    assert second.reply["content"] == f"Queue '{queue.name}' is empty"
    assert first_still_waiting
    assert waiting.reply["content"] == f"Queue '{queue.name}' is empty"
    assert waiting.elapsed >= 0.8


def test_without_a_wait_an_empty_queue_is_reported_at_once(settings: Any, grader_client: Client, queue: Any) -> None:
    wait_settings(settings, 0.0)
    poll = Poll(grader_client, queue.name)
    poll.start()
    poll.join(5)
    assert poll.reply == {"return_code": 1, "content": f"Queue '{queue.name}' is empty"}


def test_a_waiting_poll_gives_its_thread_back_when_every_web_thread_has_a_request(
    settings: Any, grader_client: Client, queue: Any
) -> None:
    # Two web threads, up to two waiters: the first poll waits; when the second request takes the last
    # thread, the first stops waiting (requests may be queued behind both).
    from grading import longpoll

    wait_settings(settings, 3.0, waiters=2)
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "WEB_THREADS": 2}
    first = Poll(grader_client, queue.name)
    first.start()
    deadline = time.monotonic() + 2.5
    while longpoll.waiting() < 1 and time.monotonic() < deadline:  # until it is in its wait (a loaded machine...)
        time.sleep(0.01)
    assert first.is_alive() and longpoll.waiting() == 1  # one thread of two taken: it waits
    second = Poll(grader_client, queue.name)
    second.start()
    first.join(5)
    second.join(5)
    assert first.reply == {"return_code": 1, "content": f"Queue '{queue.name}' is empty"}
    assert second.reply == {"return_code": 1, "content": f"Queue '{queue.name}' is empty"}
    # It answered when the second request came, before its 3 s wait ran out (a full wait is never shorter).
    assert first.elapsed < 3.0


def test_no_poll_waits_while_every_web_thread_has_a_request(settings: Any, grader_client: Client, queue: Any) -> None:
    wait_settings(settings, 3.0, waiters=2)
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "WEB_THREADS": 1}  # this request holds the only one
    poll = Poll(grader_client, queue.name)
    poll.start()
    poll.join(5)
    assert poll.reply == {"return_code": 1, "content": f"Queue '{queue.name}' is empty"}
    assert poll.elapsed < 1.5
