"""Superseding stays within one queue and one LMS account: callback URLs are predictable, so reusing one must
not let an account cancel another account's pending work (nor its own in another queue)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from grading.models import Queue, Role, Status, Submission
from tests.conftest import LMS_PASSWORD, make_account, submit

pytestmark = pytest.mark.django_db

CALLBACK = "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update"


def envelope(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


def test_a_submission_supersedes_only_the_same_accounts_earlier_ones_in_the_same_queue(
    queue: Queue, other_queue: Queue
) -> None:
    shared = Queue.objects.create(name="shared")
    lms_a = make_account("lms-a", LMS_PASSWORD, Role.LMS, queue, shared)
    lms_b = make_account("lms-b", LMS_PASSWORD, Role.LMS, other_queue, shared)
    a_in_queue = submit(queue, lms_a, callback_url=CALLBACK)
    a_in_shared = submit(shared, lms_a, callback_url=CALLBACK)
    # Account B reuses A's (predictable) callback URL, in its own queue and in a queue both are granted.
    b_in_other = submit(other_queue, lms_b, callback_url=CALLBACK)
    b_in_shared = submit(shared, lms_b, callback_url=CALLBACK)
    statuses = dict(Submission.objects.values_list("pk", "status"))
    assert statuses == {
        a_in_queue.pk: Status.QUEUED,
        a_in_shared.pk: Status.QUEUED,
        b_in_other.pk: Status.QUEUED,
        b_in_shared.pk: Status.QUEUED,
    }
    # A's own resubmission in one queue supersedes A's earlier one there, and nothing else.
    a_again = submit(queue, lms_a, callback_url=CALLBACK)
    statuses = dict(Submission.objects.values_list("pk", "status"))
    assert statuses == {
        a_in_queue.pk: Status.SUPERSEDED,
        a_in_shared.pk: Status.QUEUED,
        b_in_other.pk: Status.QUEUED,
        b_in_shared.pk: Status.QUEUED,
        a_again.pk: Status.QUEUED,
    }
    assert Submission.objects.get(pk=a_in_queue.pk).superseded_by_id == a_again.pk


def test_an_lms_account_reusing_another_accounts_callback_over_http_supersedes_nothing_of_it(
    queue: Queue, other_queue: Queue
) -> None:
    lms_a = make_account("lms-a", LMS_PASSWORD, Role.LMS, queue)
    make_account("lms-b", LMS_PASSWORD, Role.LMS, other_queue)
    victim = submit(queue, lms_a, callback_url=CALLBACK)
    attacker = Client()
    assert (
        envelope(attacker.post("/xqueue/login/", {"username": "lms-b", "password": LMS_PASSWORD}))["return_code"] == 0
    )
    header = json.dumps({"lms_callback_url": CALLBACK, "lms_key": "k", "queue_name": "other-queue"})
    reply = envelope(attacker.post("/xqueue/submit/", {"xqueue_header": header, "xqueue_body": "x"}))
    assert reply == {"return_code": 0, "content": "1"}
    victim.refresh_from_db()
    assert victim.status == Status.QUEUED
    assert victim.superseded_by_id is None
    assert list(victim.events.values_list("to_status", flat=True)) == [Status.QUEUED]


def test_the_supersede_lookup_is_served_by_an_index_on_callback_queue_and_account() -> None:
    indexes = {index.name: index.fields for index in Submission._meta.indexes}
    assert indexes["sub_supersede"] == ["callback_hash", "queue", "submitted_by"]
    assert "sub_callback" not in indexes


def test_the_supersede_look_up_can_be_answered_from_its_index(queue: Queue) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    lms_a = make_account("lms-a", LMS_PASSWORD, Role.LMS, queue)
    submit(queue, lms_a, callback_url=CALLBACK)
    with CaptureQueriesContext(connection) as queries:
        submit(queue, lms_a, callback_url=CALLBACK)
    (look_up,) = [q["sql"] for q in queries.captured_queries if "callback_hash" in q["sql"] and "SELECT" in q["sql"]]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # With a handful of rows the planner prefers a sequential scan; forbid it to see the index serve.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + look_up)
        elif connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + look_up)
        else:
            cursor.execute("EXPLAIN " + look_up)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "sub_supersede" in plan, plan
    if connection.vendor == "postgresql":
        # The queue and the account are matched inside the index, not by visiting other tenants' rows.
        condition = plan[plan.index("Index Cond") :]
        assert "queue_id" in condition and "submitted_by_id" in condition, plan
