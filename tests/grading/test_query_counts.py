"""The hot endpoints cost a small, fixed number of queries, whatever the backlog.

A polling grader's session, account and grants come from the cache after its first request, so a
get_submission is the session read plus the lease (one statement on PostgreSQL), and nothing grows with the
number of waiting submissions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from grading.models import Queue
from tests.conftest import submit
from tests.xqclient import grade

pytestmark = pytest.mark.django_db

# Session read + the lease statement on PostgreSQL. MySQL/MariaDB and SQLite look for an expired lease to take
# over, then claim the candidate (SELECT ... FOR UPDATE SKIP LOCKED), update it and write the event in one
# transaction, which inside the test's own transaction is a savepoint and its release; put_result there is
# the conditional UPDATE and the event in a savepoint, and the queue name for the log line.
GET_SUBMISSION_QUERIES = {"postgresql": 2, "mysql": 7, "sqlite": 7}
PUT_RESULT_QUERIES = {"postgresql": 2, "mysql": 6, "sqlite": 6}
GET_QUEUELEN_QUERIES = 2  # session read + one COUNT


def fill(queue: Queue, lms_user: Any, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{n}", body=f"body-{n}")


def count_queries(call: Any) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as captured:
        result = call()
    return len(captured.captured_queries), result


def pull(client: Client, queue: Queue) -> dict[str, Any]:
    return json.loads(client.get("/xqueue/get_submission/", {"queue_name": queue.name}).content)


def test_get_submission_costs_the_same_few_queries_with_a_backlog_of_2_or_200(
    queue: Queue, lms_user: Any, grader_client: Client
) -> None:
    fill(queue, lms_user, 2)
    pull(grader_client, queue)  # the first request fills the account and grant caches
    small, reply = count_queries(lambda: pull(grader_client, queue))
    assert reply["return_code"] == 0
    fill(queue, lms_user, 200, start=2)
    large, reply = count_queries(lambda: pull(grader_client, queue))
    assert reply["return_code"] == 0
    assert small == large == GET_SUBMISSION_QUERIES[connection.vendor]


def test_get_submission_on_an_empty_queue_costs_no_more_than_a_lease(queue: Queue, grader_client: Client) -> None:
    pull(grader_client, queue)
    queries, reply = count_queries(lambda: pull(grader_client, queue))
    assert reply == {"return_code": 1, "content": f"Queue '{queue.name}' is empty"}
    assert queries <= GET_SUBMISSION_QUERIES[connection.vendor]


def test_put_result_costs_a_fixed_number_of_queries(queue: Queue, lms_user: Any, grader_client: Client) -> None:
    fill(queue, lms_user, 3)
    first = json.loads(pull(grader_client, queue)["content"])
    grader_client.post("/xqueue/put_result/", {"xqueue_header": first["xqueue_header"], "xqueue_body": grade()})
    second = json.loads(pull(grader_client, queue)["content"])
    queries, response = count_queries(
        lambda: grader_client.post(
            "/xqueue/put_result/", {"xqueue_header": second["xqueue_header"], "xqueue_body": grade()}
        )
    )
    assert json.loads(response.content) == {"return_code": 0, "content": ""}
    assert queries == PUT_RESULT_QUERIES[connection.vendor]


def test_get_queuelen_costs_the_same_two_queries_whatever_the_backlog(
    queue: Queue, lms_user: Any, grader_client: Client
) -> None:
    def length() -> Any:
        return json.loads(grader_client.get("/xqueue/get_queuelen/", {"queue_name": queue.name}).content)

    length()
    small, reply = count_queries(length)
    assert reply == {"return_code": 0, "content": 0}
    fill(queue, lms_user, 150)
    large, reply = count_queries(length)
    assert reply == {"return_code": 0, "content": 150}
    assert small == large == GET_QUEUELEN_QUERIES
