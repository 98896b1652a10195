"""One submission never holds up the others, whatever its grader replied: on each of the three paths (a
polling grader's put_result over real HTTP, a Celery grader through the real broker, an HTTP push grader),
a reply that makes JSON parsers recurse 100 000 levels deep and a grade whose POST to the LMS raises sit at
the head of the line, before 50 good ones, and all 50 good grades arrive, once each.

Each of the two fails alone: its reason in its timeline, an ERROR log line, the "could not be graded"
notice to the LMS. The POST raises inside the HTTP client (urllib3, the edge of the system), for the one
grade that carries RAISE_ON_POST_MSG; its notice is posted normally.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from grading import grades
from grading.models import Queue, QueueMode, Status, Submission
from tests.conftest import GRADER_PASSWORD, fast_pipeline, submit
from tests.e2e.graders import POISON_REPLY, RAISE_ON_POST_MSG
from tests.http_grader import FakeHTTPGrader
from tests.lms import FakeLMS
from tests.support.services import grader
from tests.support.waiting import wait_for
from tests.xqclient import XQueueClient, grade, lms_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]

GOOD = 50
NOTICE = json.loads(grades.not_graded_notice())


@pytest.fixture
def post_raises(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The HTTP client raises (no network error: a defect, as far as gradequeue can tell) when asked to POST
    a body that carries RAISE_ON_POST_MSG. Returns the bodies it refused."""
    refused: list[str] = []
    real = urllib3.PoolManager.urlopen
    marker = RAISE_ON_POST_MSG.replace("<", "%3C").replace(">", "%3E").replace("/", "%2F")

    def urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        body = str(kwargs.get("body") or "")
        if marker in body:
            refused.append(body)
            raise RuntimeError("the client broke on this grade\x00 (with a NUL in the message)")
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", urlopen)
    return refused


def check_outcome(fake_lms: FakeLMS, good: dict[int, int], poison: int, raising: int, caplog: Any) -> None:
    """The 50 good grades arrived once each, and the two bad ones failed alone, each with its notice."""
    everyone = [*good, poison, raising]
    wait_for(
        lambda: Submission.objects.filter(pk__in=everyone, status=Status.DELIVERED).count() == GOOD + 2,
        timeout=120,
        what=f"{GOOD} grades and 2 notices delivered",
    )
    per_key = fake_lms.deliveries_per_key()
    assert per_key == {f"k{student}": 1 for student in [*good.values(), 900, 901]}
    by_key = {cb.lms_key: cb for cb in fake_lms.delivered()}
    for pk, student in good.items():
        assert json.loads(by_key[f"k{student}"].body) == {
            "correct": True,
            "score": 1.0,
            "msg": json.loads(Submission.objects.get(pk=pk).grader_reply)["msg"],
        }
        reasons = list(Submission.objects.get(pk=pk).events.values_list("reason", flat=True))
        assert reasons[-2:] == ["scored", "delivered"]
    assert json.loads(by_key["k900"].body) == NOTICE
    assert json.loads(by_key["k901"].body) == NOTICE

    bad = Submission.objects.get(pk=poison)
    assert bad.failure_reason == "grader reply: the reply is nested too deeply"
    assert list(bad.events.values_list("from_status", "to_status", "reason"))[-2:] == [
        ("returned", "failed", "invalid_reply"),
        ("failed", "delivered", "delivered"),
    ]
    broken = Submission.objects.get(pk=raising)
    assert broken.failure_reason == (
        "delivery: posting it raised RuntimeError: the client broke on this grade\\x00 (with a NUL in the message)"
    )
    assert list(broken.events.values_list("from_status", "to_status", "reason"))[-3:] == [
        ("returned", "graded", "scored"),
        ("graded", "failed", "delivery_error"),
        ("failed", "delivered", "delivered"),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"submission {poison}: grader reply: the reply is nested too deeply" in m for m in errors), errors
    assert any(f"submission {raising}: delivery attempt 1 posting it raised RuntimeError" in m for m in errors), errors


def test_pull_a_poison_reply_and_a_grade_whose_post_raises_hold_up_none_of_50_others(
    settings: Any,
    caplog: Any,
    post_raises: list[str],
    live_server: Any,
    celery_worker_app: Any,
    fake_lms: FakeLMS,
    queue: Queue,
    lms_user: Any,
    grader_user: Any,
) -> None:
    fast_pipeline(settings)
    caplog.set_level(logging.INFO)
    watcher = XQueueClient(live_server.url, "grader", GRADER_PASSWORD)
    # The two bad ones first: the head of the line, where the poison used to stay for good.
    poison = submit(queue, lms_user, fake_lms.callback_url(900), lms_body(), lms_key="k900").pk
    raising = submit(queue, lms_user, fake_lms.callback_url(901), lms_body(), lms_key="k901").pk
    good = {submit(queue, lms_user, fake_lms.callback_url(s), lms_body(), lms_key=f"k{s}").pk: s for s in range(GOOD)}
    for _ in range(GOOD + 2):
        content = json.loads(watcher.get_submission(queue.name)["content"])
        pk = json.loads(content["xqueue_header"])["submission_id"]
        reply = POISON_REPLY if pk == poison else grade(msg=RAISE_ON_POST_MSG if pk == raising else f"<p>{pk}</p>")
        assert watcher.put_result(content["xqueue_header"], reply) == {"return_code": 0, "content": ""}
    check_outcome(fake_lms, good, poison, raising, caplog)
    assert len(post_raises) == 1  # the grade was tried once; its notice went out instead


def test_celery_grader_a_poison_reply_and_a_grade_whose_post_raises_hold_up_none_of_50_others(
    settings: Any,
    caplog: Any,
    post_raises: list[str],
    tmp_path: Path,
    celery_worker_app: Any,
    fake_lms: FakeLMS,
    grader_queue: Queue,
    lms_user: Any,
) -> None:
    fast_pipeline(settings)
    caplog.set_level(logging.INFO)
    with grader(grader_queue.name, "tests.e2e.graders:hostile", tmp_path):
        poison = submit(grader_queue, lms_user, fake_lms.callback_url(900), lms_body("poison"), lms_key="k900").pk
        raising = submit(grader_queue, lms_user, fake_lms.callback_url(901), lms_body("raise"), lms_key="k901").pk
        good = {
            submit(grader_queue, lms_user, fake_lms.callback_url(s), lms_body("42"), lms_key=f"k{s}").pk: s
            for s in range(GOOD)
        }
        check_outcome(fake_lms, good, poison, raising, caplog)
    assert Submission.objects.get(pk=poison).grader_reply == POISON_REPLY
    assert len(post_raises) == 1


class HostileHTTPGrader(FakeHTTPGrader):
    @staticmethod
    def grade_for(body: bytes) -> str:
        response = json.loads(json.loads(body)["xqueue_body"])["student_response"]
        if response == "poison":
            return POISON_REPLY
        if response == "raise":
            return json.dumps({"correct": True, "score": 1.0, "msg": RAISE_ON_POST_MSG})
        return json.dumps({"correct": True, "score": 1.0, "msg": f"<p>{response}</p>"})


@pytest.fixture
def hostile_http_grader() -> Iterator[HostileHTTPGrader]:
    server = HostileHTTPGrader().start()
    yield server
    server.stop()


def test_http_push_a_poison_reply_and_a_grade_whose_post_raises_hold_up_none_of_50_others(
    settings: Any,
    caplog: Any,
    post_raises: list[str],
    celery_worker_app: Any,
    hostile_http_grader: HostileHTTPGrader,
    fake_lms: FakeLMS,
    lms_user: Any,
) -> None:
    fast_pipeline(settings, PUSH_HTTP_TIMEOUT=5.0, PUBLIC_BASE_URL="http://gradequeue.test/")
    caplog.set_level(logging.INFO)
    queue = Queue.objects.create(name="http-hostile", mode=QueueMode.HTTP, push_url=hostile_http_grader.url)
    poison = submit(queue, lms_user, fake_lms.callback_url(900), lms_body("poison"), lms_key="k900").pk
    raising = submit(queue, lms_user, fake_lms.callback_url(901), lms_body("raise"), lms_key="k901").pk
    good = {
        submit(queue, lms_user, fake_lms.callback_url(s), lms_body("42"), lms_key=f"k{s}").pk: s for s in range(GOOD)
    }
    check_outcome(fake_lms, good, poison, raising, caplog)
    assert Submission.objects.get(pk=poison).grader_reply == POISON_REPLY
    assert len(post_raises) == 1
