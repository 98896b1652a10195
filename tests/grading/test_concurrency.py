"""Many graders pulling at once: each submission is handed out exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from grading import lifecycle
from grading.models import Status, Submission
from tests.conftest import lms_header

PULLERS = 32
BACKLOG = 500


@pytest.mark.django_db(transaction=True)
def test_32_concurrent_pullers_get_each_of_500_submissions_exactly_once(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    from django.utils import timezone

    now = timezone.now()
    Submission.objects.bulk_create(
        Submission(
            queue=queue,
            status=Status.QUEUED,
            lms_header=lms_header(f"http://127.0.0.1:9/{i}"),
            lms_callback_url=f"http://127.0.0.1:9/{i}",
            callback_hash=str(i),
            lms_key="k",
            body=str(i),
            created_at=now,
            updated_at=now,
        )
        for i in range(BACKLOG)
    )
    handed_out: list[int] = []
    keys: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(PULLERS)

    def puller() -> None:
        try:
            start.wait()
            while True:
                lease = lifecycle.lease_next(queue, grader_user)
                if lease is None:
                    break
                with lock:
                    handed_out.append(lease.submission_id)
                    keys.append(lease.key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=puller) for _ in range(PULLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    duplicates = [pk for pk, n in Counter(handed_out).items() if n > 1]
    assert duplicates == []
    assert len(handed_out) == BACKLOG
    assert len(set(keys)) == BACKLOG
    assert Submission.objects.filter(status=Status.PULLED).count() == BACKLOG
    assert Submission.objects.filter(events__to_status=Status.PULLED).count() == BACKLOG


EXPIRED = 100


@pytest.mark.django_db(transaction=True)
def test_32_concurrent_pullers_and_a_reclaim_take_each_expired_lease_once_and_each_waiting_one_once(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from grading.models import SubmissionEvent

    now = timezone.now()
    Submission.objects.bulk_create(
        Submission(
            queue=queue,
            status=Status.QUEUED,
            lms_header=lms_header(f"http://127.0.0.1:9/{i}"),
            lms_callback_url=f"http://127.0.0.1:9/{i}",
            callback_hash=str(i),
            lms_key="k",
            body=str(i),
            created_at=now,
            updated_at=now,
        )
        for i in range(BACKLOG)
    )
    # The first EXPIRED were leased once, 301 s ago, and their graders went away: their leases ran out a second ago.
    first_keys = {}
    for _ in range(EXPIRED):
        lease = lifecycle.lease_next(queue, grader_user)
        assert lease is not None
        first_keys[lease.submission_id] = lease.key
    Submission.objects.filter(pk__in=first_keys).update(
        updated_at=now - timedelta(seconds=301), lease_expires_at=now - timedelta(seconds=1)
    )
    handed_out: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(PULLERS + 1)
    done = threading.Event()

    def puller() -> None:
        try:
            start.wait()
            while True:
                lease = lifecycle.lease_next(queue, grader_user)
                if lease is None:
                    break
                with lock:
                    handed_out.append(lease.submission_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def reclaimer() -> None:
        try:
            start.wait()
            while not done.is_set():
                lifecycle.reclaim_expired(batch=10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=puller) for _ in range(PULLERS)]
    sweeper = threading.Thread(target=reclaimer)
    for thread in [*threads, sweeper]:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    sweeper.join(timeout=60)
    assert not errors, errors
    duplicates = [pk for pk, n in Counter(handed_out).items() if n > 1]
    assert duplicates == []
    assert len(handed_out) == BACKLOG
    rows = dict(Submission.objects.values_list("pk", "attempts"))
    assert Counter(rows.values()) == Counter({1: BACKLOG - EXPIRED, 2: EXPIRED})
    assert {pk for pk, attempts in rows.items() if attempts == 2} == set(first_keys)
    assert Submission.objects.filter(status=Status.PULLED).count() == BACKLOG
    # Each expired lease came back once, whether the reclaim or a lease took it over, and no old key is current.
    expired_events = Counter(
        SubmissionEvent.objects.filter(reason="lease_expired").values_list("submission_id", flat=True)
    )
    assert expired_events == Counter(dict.fromkeys(first_keys, 1))
    assert SubmissionEvent.objects.filter(to_status=Status.PULLED).count() == BACKLOG + EXPIRED
    assert not Submission.objects.filter(lease_key__in=list(first_keys.values())).exists()
