"""Property-based run of the JSON API against its own OpenAPI schema (schemathesis): every operation, as an
operator and as an LMS account, with generated valid and invalid requests. No 5xx; every answer has a
documented status code, content type and body shape.

Bounded for ``make test`` (GRADEQUEUE_SCHEMATHESIS_EXAMPLES examples per operation and account, default 20); set it
higher for a long run. GRADEQUEUE_SCHEMATHESIS_REPORT=FILE appends the run's figures to FILE (operations,
requests, answers by status class).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from config.wsgi import application
from grading.models import Queue, Role, Status, Submission
from grading.rest import tokens
from tests.conftest import make_account, submit

EXAMPLES = int(os.environ.get("GRADEQUEUE_SCHEMATHESIS_EXAMPLES", "20"))
# Requests sent, by operation and by answer's status class, for the summary line at the end of the run.
SENT: Counter[tuple[str, str]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    operations = sorted({operation for operation, _ in SENT})
    by_class = Counter()
    for (_, answer), count in SENT.items():
        by_class[answer] += count
    line = (
        f"schemathesis: {len(operations)} operations, {sum(SENT.values())} requests "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(by_class.items()))}), {EXAMPLES} examples per operation"
    )
    if os.environ.get("GRADEQUEUE_SCHEMATHESIS_REPORT"):
        with open(os.environ["GRADEQUEUE_SCHEMATHESIS_REPORT"], "a") as out:
            out.write(line + "\n")


@pytest.fixture(autouse=True)
def _keep_the_test_connection(db: Any) -> Iterator[None]:
    # The application is called in this thread, inside the test's transaction: as Django's test client
    # does, keep the request signals from closing the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def accounts(db: Any) -> dict[str, str]:
    """An operator and an LMS account with tokens, and a few submissions in each status the actions use."""
    queue = Queue.objects.create(name="test-123")
    Queue.objects.create(name="other-queue")
    lms = make_account("lms", "pw-lms-1", Role.LMS, queue)
    ops = get_user_model().objects.create_user("ops", password="pw-ops-1", is_staff=True)
    for index, status in enumerate((Status.QUEUED, Status.FAILED, Status.DEAD_LETTER, Status.DELIVERED)):
        s = submit(queue, lms, callback_url=f"http://127.0.0.1:9/{index}", lms_key=f"k{index}")
        Submission.objects.filter(pk=s.pk).update(status=status)
    return {"operator": tokens.issue(ops)[1], "lms": tokens.issue(lms)[1]}


# The schema is generated from the code, without the database: loaded once, when the tests are collected.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)


def call(case: Any, token: str) -> None:
    # Schema-valid requests may still be refused for what the schema cannot say (a queue that does not
    # exist, a status that does not allow the action): positive_data_acceptance does not apply.
    try:
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, excluded_checks=[positive_data_acceptance]
        )
    except BaseException:  # schemathesis reports failed checks as an exception group
        SENT[(case.operation.label, "failed check")] += 1
        raise
    SENT[(case.operation.label, f"{response.status_code // 100}xx")] += 1


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_as_an_operator_every_generated_request_is_answered_as_the_schema_says(
    case: Any, accounts: dict[str, str]
) -> None:
    call(case, accounts["operator"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_as_an_lms_account_every_generated_request_is_answered_as_the_schema_says(
    case: Any, accounts: dict[str, str]
) -> None:
    call(case, accounts["lms"])
