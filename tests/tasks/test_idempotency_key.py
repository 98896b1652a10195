"""Every POST of one grade carries the same Idempotency-Key, so that any LMS can recognise a repeat; another
submission, or a new grade of the same one, gets another key."""

from __future__ import annotations

import re
from typing import Any

import pytest

from grading import grades, lifecycle
from grading.models import Status
from tests.conftest import fast_pipeline
from tests.lms import FakeLMS
from tests.support.states import graded_submission, status_of
from tests.support.waiting import wait_for
from tests.xqclient import grade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]

KEY = re.compile(r'^"gradequeue-(\d+)-[0-9a-f]{32}"$')


def test_retries_and_a_redelivery_of_one_grade_carry_one_key_and_a_new_grade_another(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    # 500, 503, then 404 (dead letter); redelivered: 200. Four POSTs of one grade.
    fake_lms.script = [500, 503, 404]
    first = graded_submission(queue, lms_user, grader_user, fake_lms.callback_url(1))
    wait_for(lambda: status_of(first) == Status.DEAD_LETTER, what="dead letter")
    assert lifecycle.redeliver(first.pk, actor="admin:ops")
    wait_for(lambda: status_of(first) == Status.DELIVERED, what="redelivery")
    keys = [cb.idempotency_key for cb in fake_lms.callbacks]
    assert [cb.status for cb in fake_lms.callbacks] == [500, 503, 404, 200]
    assert len(set(keys)) == 1
    match = KEY.match(keys[0])
    assert match is not None and int(match.group(1)) == first.pk

    # Another student's grade: another key.
    second = graded_submission(queue, lms_user, grader_user, fake_lms.callback_url(2))
    wait_for(lambda: status_of(second) == Status.DELIVERED, what="the second delivery")
    assert fake_lms.callbacks[-1].idempotency_key not in keys
    assert KEY.match(fake_lms.callbacks[-1].idempotency_key)

    # The first submission graded anew (an operator requeued it): a new grade, a new key.
    assert lifecycle.requeue(first.pk, actor="admin:ops")
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and lease.submission_id == first.pk
    lifecycle.accept_result(first.pk, lease.key, grade(False, 0.0), grader_user, [queue.pk])
    wait_for(lambda: len(fake_lms.callbacks) == 6, what="the new grade delivered")
    regraded = fake_lms.callbacks[-1]
    assert regraded.lms_key == "key-1" and regraded.status == 200
    assert regraded.idempotency_key not in keys
    assert regraded.idempotency_key != fake_lms.callbacks[-2].idempotency_key
    # The worker records the answer after the LMS has it: wait for the record, not only the callback.
    wait_for(lambda: status_of(first) == Status.DELIVERED, what="the new grade recorded as delivered")


def test_a_notice_carries_its_own_key_the_same_on_each_of_its_retries(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    fake_lms.script = [503]
    submission = graded_submission(queue, lms_user, grader_user, fake_lms.callback_url(), reply="not json")
    wait_for(lambda: status_of(submission) == Status.DELIVERED, what="the notice delivered")
    [refused, taken] = fake_lms.callbacks
    assert (refused.status, taken.status) == (503, 200)
    assert refused.body == taken.body == grades.not_graded_notice()
    assert refused.idempotency_key == taken.idempotency_key
    assert KEY.match(taken.idempotency_key)
