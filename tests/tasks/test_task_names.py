"""Every task message gradequeue publishes, and every periodic schedule entry, names a task that a worker runs.

A name that no worker registers is not an error anywhere: the broker takes the message and the worker
discards it ("Received unregistered task"), or beat sends it every 30 s to no effect. These tests are what
turns a misspelt name red.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import transaction
from django_celery_beat.models import PeriodicTask

from grading import outage, publish, schedule

# The names on the wire: queued messages, beat rows of an upgraded site and graders of other versions
# carry them, so they are written down here, not taken from the code under test.
SERVER_TASKS = {
    "grading.score_returned",
    "grading.deliver_result",
    "grading.dispatch",
    "grading.push_http",
    "grading.record_result",
    "grading.reclaim_expired_leases",
    "grading.sweep_followups",
    "grading.sample_queue_depth",
    "grading.rollup_metrics",
}


def registered() -> set[str]:
    """The tasks a worker of ``celery_app`` runs: the modules it imports at start-up (``include``)."""
    from celery_app import app

    app.loader.import_default_modules()
    # Less Celery's built-in tasks, and pytest-celery's shared tasks, which it adds to every app of the tests.
    return {name for name in app.tasks if not name.startswith(("celery.", "pytest_celery."))}


def test_the_worker_registers_exactly_the_server_tasks() -> None:
    assert registered() == SERVER_TASKS


def test_every_name_the_server_publishes_is_a_task_a_worker_runs() -> None:
    from gradequeue_grader import make_app

    assert set(publish.PUBLISHED) == {
        "grading.score_returned",
        "grading.deliver_result",
        "grading.dispatch",
        "grading.push_http",
        "gradequeue.grade",
    }
    grader = make_app("names", lambda _body, _files: {"correct": True, "score": 1, "msg": ""}, "memory://")
    for name in publish.PUBLISHED:
        # The grade message is run by a grader's worker (gradequeue_grader), every other by gradequeue's.
        runs_it = set(grader.tasks) if name == publish.GRADE_TASK else registered()
        assert name in runs_it, f"{name} is published but no worker registers it"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any, dict[str, Any]]]:
    from celery_app import app

    messages: list[tuple[str, Any, Any, dict[str, Any]]] = []

    def record(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        messages.append((name, args, kwargs, options))

    monkeypatch.setattr(app, "send_task", record)
    return messages


@pytest.mark.django_db(transaction=True)
def test_each_kind_of_message_goes_out_under_a_registered_name_after_commit(
    sent: list[tuple[str, Any, Any, dict[str, Any]]],
) -> None:
    expires = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert publish.score_run()
    assert publish.deliver(7, countdown=2.5)
    assert publish.dispatch(3)
    assert publish.push_http(7, "key-7", 2, countdown=4.0)
    message = {"submission_id": 7, "submission_key": "key-7", "xqueue_body": "{}", "xqueue_files": "{}"}
    assert publish.grade(message, "python-101", expires)  # type: ignore[arg-type]
    with transaction.atomic():
        publish.deliver_after_commit(8)
        publish.dispatch_after_commit(4, "celery")
        publish.dispatch_after_commit(5, "pull")  # a pull queue has no dispatcher: nothing is sent
        assert len(sent) == 5  # nothing before the commit
    assert [(name, args) for name, args, _kwargs, _options in sent] == [
        ("grading.score_returned", None),
        ("grading.deliver_result", [7]),
        ("grading.dispatch", [3]),
        ("grading.push_http", [7, "key-7", 2]),
        ("gradequeue.grade", None),
        ("grading.deliver_result", [8]),
        ("grading.dispatch", [4]),
    ]
    assert sent[1][3] == {"countdown": 2.5}
    assert sent[3][3] == {"countdown": 4.0, "expires": None}
    assert sent[4][2] == message and sent[4][3] == {"queue": "python-101", "expires": expires}
    from gradequeue_grader import make_app

    grader = make_app("names", lambda _body, _files: {"correct": True, "score": 1, "msg": ""}, "memory://")
    runs = registered() | set(grader.tasks)
    assert [name for name, *_ in sent if name not in runs] == []


def test_a_message_the_broker_refuses_is_logged_once_per_outage_and_not_raised(
    monkeypatch: pytest.MonkeyPatch, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from celery_app import app

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    tried: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, *a, **k: (tried.append(name), refuse()))
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "BROKER_RETRY_SECONDS": 0.0}  # every publish tries
    with caplog.at_level(logging.WARNING, logger="grading.broker"):
        assert publish.deliver(7) is False
        assert publish.score_run() is False
    assert tried == ["grading.deliver_result", "grading.score_returned"]
    assert [r.getMessage() for r in caplog.records if r.name == "grading.broker"] == [
        "broker unavailable: ConnectionRefusedError: [Errno 111] Connection refused (task messages are not sent; "
        "the periodic sweep sends the work once it answers); further failures are counted, not logged, until it "
        "answers again"
    ]
    assert publish.unsent_reason() == "ConnectionRefusedError: [Errno 111] Connection refused"
    # Within BROKER_RETRY_SECONDS of a failure the next publish does not even try.
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "BROKER_RETRY_SECONDS": 60.0}
    assert publish.deliver(7) is False
    monkeypatch.setattr(app, "send_task", lambda *a, **k: pytest.fail("published during the pause"))
    assert publish.dispatch(3) is False
    assert outage.broker.state()["calls"] == 4  # two failed, two skipped


def test_every_schedule_entry_is_a_registered_task() -> None:
    assert {item.task for item in schedule.SCHEDULE} == {
        "grading.reclaim_expired_leases",
        "grading.sweep_followups",
        "grading.sample_queue_depth",
        "grading.rollup_metrics",
    }
    assert [item.task for item in schedule.SCHEDULE if item.task not in registered()] == []


@pytest.mark.django_db
def test_every_periodic_task_row_that_beat_runs_is_a_registered_task() -> None:
    schedule.sync()
    interval = PeriodicTask.objects.first().interval  # type: ignore[union-attr]
    # A row an earlier version defined, under a name no worker has any longer: sync disables it.
    PeriodicTask.objects.create(name="gradequeue: retired job", task="grading.score_result", interval=interval)
    schedule.sync()
    enabled = set(PeriodicTask.objects.filter(enabled=True).values_list("task", flat=True))
    assert enabled == {
        "grading.reclaim_expired_leases",
        "grading.sweep_followups",
        "grading.sample_queue_depth",
        "grading.rollup_metrics",
    }
    assert enabled - registered() == set()
