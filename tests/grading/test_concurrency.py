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
