"""Push-mode dispatch and replies (grading.push) against the real database and broker."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from grading import grades, lifecycle, push
from grading.models import Queue, QueueMode, Status, Submission
from tests import broker
from tests.conftest import submit
from tests.http_grader import FakeHTTPGrader
from tests.xqclient import lms_body

pytestmark = pytest.mark.django_db


def grade_json(correct: bool = True) -> str:
    return json.dumps({"correct": correct, "score": 1.0 if correct else 0.0, "msg": "<p>ok</p>"})


@pytest.fixture
def celery_queue(db: Any) -> Any:
    queue = Queue.objects.create(name="push-unit", mode=QueueMode.CELERY)
    broker.purge(queue.name)
    yield queue
    broker.purge(queue.name)


def statuses(queue: Queue) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Submission.objects.filter(queue=queue).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_dispatch_publishes_a_grade_message_with_the_lease_on_the_queue_named_after_the_queue(
    celery_queue: Queue, lms_user: Any
) -> None:
    sub = submit(celery_queue, lms_user, body=lms_body(response="42"))
    assert push.dispatch(celery_queue.pk) == 1

    sub.refresh_from_db()
    assert sub.status == Status.PULLED and sub.attempts == 1 and sub.lease_key
    [(headers, body)] = broker.take_messages("push-unit")
    assert headers["task"] == "gradequeue.grade"
    args, kwargs, _embed = body
    assert args == []
    assert kwargs["submission_id"] == sub.pk
    assert kwargs["submission_key"] == sub.lease_key
    assert kwargs["xqueue_body"] == sub.body
    assert json.loads(kwargs["xqueue_files"]) == {}
    assert kwargs["reply_to"] == {"exchange": "gradequeue-test", "routing_key": "gradequeue-test"}
    # The message expires with its lease: a grader never starts on work that has been handed out again.
    assert abs(timezone.datetime.fromisoformat(headers["expires"]) - sub.lease_expires_at) < timedelta(seconds=1)
    assert list(sub.events.values_list("reason", "actor")) == [
        ("submitted", "user:lms"),
        ("dispatch", "system:dispatch"),
    ]


def test_dispatch_respects_the_queues_in_flight_cap(celery_queue: Queue, lms_user: Any) -> None:
    celery_queue.max_in_flight = 2
    celery_queue.save()
    subs = [submit(celery_queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{i}") for i in range(5)]

    assert push.dispatch(celery_queue.pk) == 2
    assert push.dispatch(celery_queue.pk) == 0
    assert statuses(celery_queue) == {"pulled": 2, "queued": 3}
    # Oldest first, as in pull mode.
    leased = list(Submission.objects.filter(status=Status.PULLED).order_by("pk").values_list("pk", "lease_key"))
    assert [pk for pk, _ in leased] == [subs[0].pk, subs[1].pk]

    # A reply frees a slot; the next dispatch fills it and no more.
    pk, key = leased[0]
    assert push.record_result(pk, key, grade_json()) is lifecycle.ResultOutcome.ACCEPTED
    assert push.dispatch(celery_queue.pk) == 1
    assert statuses(celery_queue) == {"returned": 1, "pulled": 2, "queued": 2}
    assert len(broker.take_messages("push-unit")) == 3


def test_queue_without_a_cap_dispatches_everything_waiting(celery_queue: Queue, lms_user: Any) -> None:
    for i in range(4):
        submit(celery_queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{i}")
    assert push.dispatch(celery_queue.pk) == 4
    assert statuses(celery_queue) == {"pulled": 4}


def test_reply_for_a_stale_dispatch_is_refused_and_the_current_one_accepted(celery_queue: Queue, lms_user: Any) -> None:
    sub = submit(celery_queue, lms_user)
    push.dispatch(celery_queue.pk)
    sub.refresh_from_db()
    stale_key = sub.lease_key

    with time_machine.travel(sub.lease_expires_at + timedelta(seconds=1)):
        assert lifecycle.reclaim_expired() == {"requeued": 1, "failed": 0}
        assert push.dispatch(celery_queue.pk) == 1
        sub.refresh_from_db()
        assert sub.attempts == 2 and sub.lease_key != stale_key

        assert push.record_result(sub.pk, stale_key, grade_json(False)) is lifecycle.ResultOutcome.WRONG_KEY
        sub.refresh_from_db()
        assert sub.status == Status.PULLED and sub.grader_reply == ""

        assert push.record_result(sub.pk, sub.lease_key, grade_json(True), "host-1") is lifecycle.ResultOutcome.ACCEPTED
    sub.refresh_from_db()
    assert sub.status == Status.RETURNED and sub.grader_reply == grade_json(True)
    assert sub.events.filter(to_status=Status.RETURNED).get().actor == "grader:celery:host-1"


def test_reply_through_the_broker_cannot_answer_a_pull_mode_submission(queue: Queue, lms_user: Any) -> None:
    sub = submit(queue, lms_user)
    lease = lifecycle.lease_next(queue, None)
    assert lease is not None and lease.submission_id == sub.pk
    assert push.record_result(sub.pk, lease.key, grade_json()) is lifecycle.ResultOutcome.NO_SUCH_SUBMISSION
    assert Submission.objects.get(pk=sub.pk).status == Status.PULLED


def test_pull_mode_and_unconfigured_http_queues_are_not_dispatched(queue: Queue, lms_user: Any) -> None:
    http_queue = Queue.objects.create(name="http-no-url", mode=QueueMode.HTTP)
    submit(queue, lms_user)
    submit(http_queue, lms_user, callback_url="http://127.0.0.1:9/other")
    assert push.dispatch(queue.pk) == 0
    assert push.dispatch(http_queue.pk) == 0
    assert Submission.objects.filter(status=Status.QUEUED).count() == 2


def test_sweep_wakes_the_dispatcher_of_push_queues_whose_work_has_waited(
    celery_queue: Queue, queue: Queue, lms_user: Any
) -> None:
    submit(celery_queue, lms_user, callback_url="http://127.0.0.1:9/a")
    submit(celery_queue, lms_user, callback_url="http://127.0.0.1:9/b")
    submit(queue, lms_user, callback_url="http://127.0.0.1:9/c")
    assert lifecycle.sweep_followups()["dispatch"] == 0  # just submitted: its own dispatch is on the way
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        assert lifecycle.sweep_followups()["dispatch"] == 1  # one wake-up per queue, none for pull queues


def test_release_lease_gives_the_attempt_back_when_asked(celery_queue: Queue, lms_user: Any) -> None:
    sub = submit(celery_queue, lms_user)
    lease = lifecycle.lease_next(celery_queue, None, reason="dispatch", actor="system:dispatch")
    assert lease is not None
    assert not lifecycle.release_lease(
        sub.pk,
        "not-the-key",
        reason="dispatch_failed",
        actor="system:dispatch",
        why="broker down",
        refund=True,
    )
    assert lifecycle.release_lease(
        sub.pk, lease.key, reason="dispatch_failed", actor="system:dispatch", why="broker down", refund=True
    )
    sub.refresh_from_db()
    assert sub.status == Status.QUEUED and sub.attempts == 0 and sub.lease_key == ""


def test_dispatched_file_links_are_absolute_and_downloadable_from_the_public_address(
    celery_queue: Queue, lms_user: Any, settings: Any, client: Any
) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "PUBLIC_BASE_URL": "http://gradequeue.example.org/"}
    path = default_storage.save("submissions/push-test/0-answer.py", ContentFile(b"print(42)\n"))
    try:
        lifecycle.submit(
            lifecycle.NewSubmission(
                queue=celery_queue,
                lms_header="{}",
                lms_callback_url="http://127.0.0.1:9/f",
                lms_key="k",
                body="{}",
                files={"answer.py": path},
            ),
            lms_user,
        )
        push.dispatch(celery_queue.pk)
        [(_headers, (_args, kwargs, _embed))] = broker.take_messages("push-unit")
        url = json.loads(kwargs["xqueue_files"])["answer.py"]
        assert url.startswith("http://gradequeue.example.org/")
        response = client.get(url.removeprefix("http://gradequeue.example.org"))
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == b"print(42)\n"
    finally:
        default_storage.delete(path)


@pytest.mark.parametrize(
    "reply",
    [{"correct": True, "score": 1, "msg": ""}, 42, None],
    ids=["an-object", "a-number", "null"],
)
def test_a_celery_reply_that_is_no_text_fails_the_submission_at_once_with_the_notice(
    monkeypatch: pytest.MonkeyPatch, celery_queue: Queue, lms_user: Any, reply: Any
) -> None:
    from celery_app import app

    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)  # no worker acts behind the test's back
    sub = submit(celery_queue, lms_user, body=lms_body(response="42"))
    push.dispatch(celery_queue.pk)
    sub.refresh_from_db()
    assert push.record_result(sub.pk, sub.lease_key, reply, "foreign") is lifecycle.ResultOutcome.WRONG_KEY
    sub.refresh_from_db()
    assert sub.status == Status.FAILED
    assert sub.failure_reason == (
        f"taking the grader's reply raised TypeError: the reply is {type(reply).__name__}, not text"
    )
    assert sub.lms_body == grades.not_graded_notice()
    assert list(sub.events.values_list("reason", "actor"))[-1] == ("invalid_reply", "grader:celery:foreign")


def test_a_celery_reply_with_a_nul_ends_failed_with_the_notice_on_every_database(
    monkeypatch: pytest.MonkeyPatch, celery_queue: Queue, lms_user: Any
) -> None:
    from celery_app import app

    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)
    sub = submit(celery_queue, lms_user, body=lms_body(response="42"))
    push.dispatch(celery_queue.pk)
    sub.refresh_from_db()
    reply = '{"correct": true, "score": 1, "msg": "a\x00b"}'
    # PostgreSQL cannot store the NUL: the submission fails as the reply is taken. SQLite stores it, and
    # scoring finds that it is no JSON. Either way it fails alone, with the notice, and nothing raises.
    push.record_result(sub.pk, sub.lease_key, reply, "g")
    lifecycle.score_returned_batch(10)
    sub.refresh_from_db()
    assert sub.status == Status.FAILED
    assert sub.lms_body == grades.not_graded_notice()
    assert sub.failure_reason in (
        "grader reply: the reply is not JSON",
        "taking the grader's reply raised DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes",
    )


# --- HTTP push: the next POST when the broker refuses it ----------------------------------------------


def test_a_push_whose_next_post_the_broker_refuses_goes_back_to_its_queue_and_is_pushed_again(
    monkeypatch: pytest.MonkeyPatch, settings: Any, lms_user: Any
) -> None:
    from celery_app import app

    # Publishing tries again at once after a failure (no pause), as if the broker came back straight away.
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "BROKER_RETRY_SECONDS": 0.0}

    grader = FakeHTTPGrader(script=[503]).start()
    try:
        queue = Queue.objects.create(name="push-http-unit", mode=QueueMode.HTTP, push_url=grader.url)
        sub = submit(queue, lms_user, body=lms_body(response="42"))
        sent: list[tuple[str, list[Any]]] = []
        monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))
        assert push.dispatch(queue.pk) == 1
        [(name, [pk, key, attempt])] = sent
        assert (name, pk, attempt) == ("grading.push_http", sub.pk, 1)

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

        monkeypatch.setattr(app, "send_task", refuse)
        # The grader answers 503; scheduling POST 2 fails: the submission does not stay leased to nobody.
        assert push.push_http(pk, key, 1) == (push.PushOutcome.REQUEUED, None)
        sub.refresh_from_db()
        assert (sub.status, sub.lease_key, sub.attempts) == (Status.QUEUED, "", 1)
        event = sub.events.order_by("pk").last()
        assert event is not None
        assert (event.from_status, event.to_status, event.reason, event.actor) == (
            "pulled",
            "queued",
            "push_retry_unsent",
            "system:push",
        )
        assert event.details["why"] == (
            "HTTP push: the grader answered HTTP 503; POST 2 could not be scheduled: "
            "ConnectionRefusedError: [Errno 111] Connection refused"
        )

        # The broker answers again: the sweep wakes the queue's dispatcher, which pushes it under a new lease.
        sent.clear()
        monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append((name, args)))
        with time_machine.travel(timezone.now() + timedelta(minutes=5)):
            assert lifecycle.sweep_followups()["dispatch"] == 1
        assert sent == [("grading.dispatch", [queue.pk])]
        sent.clear()
        assert push.dispatch(queue.pk) == 1
        [(name, [pk, new_key, attempt])] = sent
        assert (name, pk, attempt) == ("grading.push_http", sub.pk, 1) and new_key != key
        assert push.push_http(pk, new_key, 1) == (push.PushOutcome.GRADED, None)
        sub.refresh_from_db()
        assert sub.status == Status.RETURNED and sub.attempts == 2
        assert len(grader.pushes) == 2
    finally:
        grader.stop()
