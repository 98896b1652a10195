"""Scoring runs: returned replies scored in batches and delivered by one task, woken by the scoring signal.

With a real worker on the real broker, a real HTTP LMS, and (for the signal) the real Redis that production
uses as its shared cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from grading import delivery, grades, lifecycle, scoring_signal
from grading.models import Status, Submission
from tests.conftest import fast_pipeline, submit
from tests.lms import FakeLMS
from tests.support.states import returned, statuses
from tests.support.waiting import wait_for
from tests.xqclient import lms_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]


@pytest.fixture
def redis_cache(settings: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The shared cache of production (Redis), so that the scoring signal is in use (``redis_url``: conftest).
    A run that found nothing listens for 0.2 s instead of 2 before it ends (the tests below call runs directly)."""
    from django.core.cache import cache

    settings.CACHES = {"default": {"BACKEND": "grading.rediscache.ResilientRedisCache", "LOCATION": redis_url}}
    monkeypatch.setattr(scoring_signal, "IDLE_SECONDS", 0.2)
    cache.clear()
    scoring_signal.forget()
    yield cache
    cache.clear()
    scoring_signal.forget()


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the task messages sent (each still sent: this only counts them)."""
    from celery_app import app

    sent: list[str] = []
    real = app.send_task

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(app, "send_task", counting)
    return sent


def test_with_the_signal_many_replies_take_few_task_messages_and_each_grade_arrives_once(
    settings: Any,
    redis_cache: Any,
    published: list[str],
    celery_worker_app: Any,
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    # Forty replies committed at once (as under load): each signals right after the commit.
    with transaction.atomic():
        ids = returned(queue, lms_user, grader_user, fake_lms, 40)
    wait_for(lambda: statuses(ids) == {Status.DELIVERED: 40}, what="40 deliveries")
    # One callback per grade, each with its own submission's header.
    assert len(fake_lms.delivered()) == 40
    assert len({cb.header for cb in fake_lms.delivered()}) == 40
    # Replies that found the flag set sent nothing: a few scoring runs (one, unless a run ended while the
    # others were still signalling), not one per reply.
    runs = published.count("grading.score_returned")
    assert 1 <= runs <= 10
    assert "grading.score_result" not in published
    for pk in ids:
        events = list(Submission.objects.get(pk=pk).events.order_by("id").values_list("to_status", flat=True))
        assert events == [Status.QUEUED, Status.PULLED, Status.RETURNED, Status.GRADED, Status.DELIVERED]


def test_a_reply_that_finds_the_flag_set_is_scored_by_the_pending_run(
    settings: Any,
    redis_cache: Any,
    held: list[str],
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    # A run has been asked for and not started yet: the flag is set.
    assert redis_cache.add(scoring_signal.FLAG, "1", timeout=60)
    ids = returned(queue, lms_user, grader_user, fake_lms, 3)
    assert held == []  # the replies relied on the pending run
    # The pending run reads until it finds nothing, then clears the flag, looks once more, listens, and ends
    # having heard nothing.
    counts = delivery.score_and_deliver_returned()
    assert counts == {"taken": 3, "graded": 3, "delivered": 3}
    assert statuses(ids) == {Status.DELIVERED: 3}
    assert not redis_cache.has_key(scoring_signal.FLAG)
    assert not redis_cache.has_key(scoring_signal.LISTENING)
    # Nobody works or listens: the next reply sends a new run.
    more = returned(queue, lms_user, grader_user, fake_lms, 1)
    assert held == ["grading.score_returned"]
    assert statuses(more) == {Status.RETURNED: 1}


def test_replies_committed_while_a_run_works_send_nothing_and_that_run_scores_them(
    settings: Any,
    redis_cache: Any,
    held: list[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    first = returned(queue, lms_user, grader_user, fake_lms, 2)
    assert held == ["grading.score_returned"]  # the first reply sent a run; the second found the flag set
    held.clear()
    later: list[int] = []
    real_batch = lifecycle.score_returned_batch

    def batch_then_more_replies(limit: int, **kwargs: Any) -> Any:
        result = real_batch(limit, **kwargs)
        if not later:
            # Graders keep replying while the run scores and posts its first batch.
            later.extend(returned(queue, lms_user, grader_user, fake_lms, 3, first=2))
        return result

    monkeypatch.setattr(lifecycle, "score_returned_batch", batch_then_more_replies)
    counts = delivery.score_and_deliver_returned()
    # The run held the flag: the three later replies sent no message, and the same run scored them.
    assert held == []
    assert counts == {"taken": 5, "graded": 5, "delivered": 5}
    assert statuses(first + later) == {Status.DELIVERED: 5}
    assert len(fake_lms.delivered()) == 5
    # Having found nothing and heard nothing, it ended: the next reply sends a new run.
    assert not redis_cache.has_key(scoring_signal.FLAG)
    more = returned(queue, lms_user, grader_user, fake_lms, 1, first=5)
    assert held == ["grading.score_returned"]
    assert statuses(more) == {Status.RETURNED: 1}


def test_a_reply_that_takes_the_flag_for_set_from_memory_is_scored_by_the_last_look_of_the_run(
    settings: Any,
    redis_cache: Any,
    held: list[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    monkeypatch.setattr(scoring_signal, "MEMORY", 1.0)
    first = returned(queue, lms_user, grader_user, fake_lms, 1)
    assert held == ["grading.score_returned"]
    later: list[int] = []
    errors: list[BaseException] = []
    real_listen = scoring_signal.RunSignal.listen

    def reply_soon() -> None:
        try:
            time.sleep(0.2)
            later.extend(returned(queue, lms_user, grader_user, fake_lms, 1, first=1))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    replier = threading.Thread(target=reply_soon)

    def listen_then_a_reply_arrives(self: scoring_signal.RunSignal) -> bool:
        if replier.ident is not None:
            return real_listen(self)
        # This web process has just found the flag set (the run holds it), so it remembers it as set...
        scoring_signal.request_scoring()
        listening = real_listen(self)
        # ...and a reply it commits after the run cleared the flag, but within the memory, sends nothing.
        replier.start()
        return listening

    monkeypatch.setattr(scoring_signal.RunSignal, "listen", listen_then_a_reply_arrives)
    counts = delivery.score_and_deliver_returned()
    replier.join(10)
    assert errors == []
    assert held == ["grading.score_returned"]  # the later reply relied on the memory, not on a new run
    # The run's last look waited out the memory, so it found the later reply too.
    assert counts == {"taken": 2, "graded": 2, "delivered": 2}
    assert statuses(first + later) == {Status.DELIVERED: 2}


def test_a_run_that_found_nothing_is_woken_by_the_next_reply_instead_of_a_new_run(
    settings: Any,
    redis_cache: Any,
    held: list[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    monkeypatch.setattr(scoring_signal, "IDLE_SECONDS", 30.0)
    first = returned(queue, lms_user, grader_user, fake_lms, 1)
    assert held == ["grading.score_returned"]
    held.clear()
    real_wait = scoring_signal.RunSignal.wait
    listening = threading.Event()
    heard: list[bool] = []

    def wait(self: scoring_signal.RunSignal, seconds: float) -> bool:
        if seconds < 1:  # the wait for the memory, before the last look
            return real_wait(self, seconds)
        if heard:
            return real_wait(self, 0.1)  # the second time: end soon
        listening.set()  # the last look found nothing: the run waits to be woken (up to 30 s)
        heard.append(real_wait(self, seconds))
        return heard[-1]

    monkeypatch.setattr(scoring_signal.RunSignal, "wait", wait)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(delivery.score_and_deliver_returned())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    runner = threading.Thread(target=run)
    runner.start()
    assert listening.wait(10)
    # A reply committed while the run listens wakes it: no task message, and the same run scores it.
    later = returned(queue, lms_user, grader_user, fake_lms, 1, first=1)
    runner.join(20)
    assert errors == []
    assert heard == [True]
    assert held == []
    assert results == [{"taken": 2, "graded": 2, "delivered": 2}]
    assert statuses(first + later) == {Status.DELIVERED: 2}
    # Having heard nothing the second time, it ended: the next reply sends a new run.
    assert not redis_cache.has_key(scoring_signal.LISTENING)
    more = returned(queue, lms_user, grader_user, fake_lms, 1, first=2)
    assert held == ["grading.score_returned"]
    assert statuses(more) == {Status.RETURNED: 1}


def test_a_listening_run_does_not_end_while_a_wake_up_is_pending(redis_cache: Any, held: list[str]) -> None:
    run = scoring_signal.RunSignal()
    assert run.hold()
    assert run.listen()
    # A reply committed now (its commit is not needed for the signal) finds the flag clear and a run listening.
    scoring_signal.request_scoring()
    assert held == []
    assert redis_cache.has_key(scoring_signal.FLAG)  # the woken run works with the flag set
    # The run's wait timed out just before the push: it may not end, and its next wait hears the push at once.
    assert run.end() is False
    assert run.wait(5.0) is True
    # Listening again with nothing pushed, it may end; afterwards a reply sends a new run.
    assert run.listen()
    assert run.end() is True
    scoring_signal.forget()
    scoring_signal.request_scoring()
    assert held == ["grading.score_returned"]


def test_a_batch_with_unusable_replies_fails_those_and_delivers_the_rest(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings)
    good = returned(queue, lms_user, grader_user, fake_lms, 3)
    bad = []
    for i, reply in enumerate(['{"correct": true}', "not json", '{"correct": 1, "score": 1, "msg": ""}']):
        submission = submit(queue, lms_user, callback_url=fake_lms.callback_url(student=100 + i), body=lms_body())
        lease = lifecycle.lease_next(queue, grader_user)
        assert lease is not None
        lifecycle.accept_result(submission.pk, lease.key, reply, grader_user, [queue.pk])
        bad.append(submission.pk)
    wait_for(lambda: statuses(good + bad) == {Status.DELIVERED: 6}, what="6 deliveries")
    for pk in good:
        assert Submission.objects.get(pk=pk).events.filter(to_status=Status.GRADED).count() == 1
    for pk in bad:
        submission = Submission.objects.get(pk=pk)
        assert submission.failure_reason.startswith("grader reply: ")
        assert submission.events.filter(to_status=Status.FAILED, reason="invalid_reply").count() == 1
    notices = [cb for cb in fake_lms.delivered() if cb.body == grades.not_graded_notice()]
    assert len(notices) == 3


def test_runs_side_by_side_score_and_deliver_each_reply_once(
    settings: Any, celery_worker_app: Any, fake_lms: FakeLMS, queue: Any, lms_user: Any, grader_user: Any
) -> None:
    fast_pipeline(settings, SCORE_BATCH=7)
    # Only the four runs below score these (no run is woken by the replies).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring_signal, "request_scoring", lambda **kwargs: None)
        ids = returned(queue, lms_user, grader_user, fake_lms, 120)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            results.append(delivery.score_and_deliver_returned())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sum(r["graded"] for r in results) == 120
    assert sum(r["delivered"] for r in results) == 120
    assert statuses(ids) == {Status.DELIVERED: 120}
    assert len(fake_lms.delivered()) == 120
    assert len({cb.header for cb in fake_lms.delivered()}) == 120


def test_a_run_that_dies_after_scoring_leaves_the_grades_to_the_sweep(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    celery_worker_app: Any,
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings, DELIVERY_TIMEOUT=0.2)
    # Replies accepted while their run's message is lost with the worker...
    monkeypatch.setattr(scoring_signal, "request_scoring", lambda **kwargs: None)
    ids = returned(queue, lms_user, grader_user, fake_lms, 2)
    monkeypatch.undo()
    # ...which had scored and claimed them, and died before posting.
    for pk in ids:
        assert lifecycle.score_and_claim(pk) is not None
    assert statuses(ids) == {Status.GRADED: 2}
    # The claim holds the grades (2 x timeout + 1 s): the sweep leaves them alone meanwhile...
    assert lifecycle.sweep_followups()["deliver"] == 0
    # ...then sends them through deliver_result, and each grade reaches the LMS once. (The two claims lapse a
    # moment apart: a sweep between the two sends the first, and the next ones find the second.)
    swept: list[int] = []
    wait_for(
        lambda: swept.append(lifecycle.sweep_followups()["deliver"]) or sum(swept) >= 2,
        what="the claims to lapse",
        timeout=10,
    )
    wait_for(lambda: statuses(ids) == {Status.DELIVERED: 2}, what="deliveries by the sweep")
    assert len(fake_lms.delivered()) == 2
    for pk in ids:
        assert Submission.objects.get(pk=pk).events.filter(to_status=Status.DELIVERED).count() == 1


def test_a_run_past_its_time_hands_the_rest_to_a_new_run(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    held: list[str],
    fake_lms: FakeLMS,
    queue: Any,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings, SCORE_BATCH=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring_signal, "request_scoring", lambda **kwargs: None)
        ids = returned(queue, lms_user, grader_user, fake_lms, 5)
    monkeypatch.setattr(delivery, "TURN_SECONDS", 0.0)
    # One full batch, then the time is up: the run stops and asks for another one.
    assert delivery.score_and_deliver_returned() == {"taken": 2, "graded": 2, "delivered": 2}
    assert held == ["grading.score_returned"]
    assert statuses(ids) == {Status.DELIVERED: 2, Status.RETURNED: 3}
