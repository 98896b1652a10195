"""The Django admin, through its views: filters, the timeline, bulk actions, and who may get in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from grading import grades, lifecycle
from grading.models import Queue, Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, submit
from tests.xqclient import grade

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/grading/submission/"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("ops", "ops@example.org", "ops-password-1")
    client = Client()
    client.force_login(user)
    return client


def act(client: Client, action: str, *submissions: Submission, query: str = "") -> list[str]:
    response = client.post(
        CHANGELIST + query, {"action": action, "_selected_action": [s.pk for s in submissions], "index": 0}
    )
    assert response.status_code == 302, response.content[:500]
    return [str(m) for m in get_messages(response.wsgi_request)]


def listed(client: Client, query: str) -> set[int]:
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return {s.pk for s in response.context["cl"].result_list}


def status_of(s: Submission) -> str:
    return Submission.objects.values_list("status", flat=True).get(pk=s.pk)


def last_event(s: Submission) -> tuple[str, str, str, str]:
    e = Submission.objects.get(pk=s.pk).events.last()
    return e.from_status, e.to_status, e.reason, e.actor


def dead_letter(queue: Queue, lms_user: Any, grader: Any) -> Submission:
    s = submit(queue, lms_user, "http://127.0.0.1:9/cb/dead")
    lease = lifecycle.lease_next(queue, grader)
    lifecycle.accept_result(s.pk, lease.key, grade(), grader, [queue.pk])
    claim = lifecycle.score_and_claim(s.pk)
    assert claim is not None
    lifecycle.record_delivery(claim, http_status=404, error="", duration_ms=1)
    assert status_of(s) == Status.DEAD_LETTER
    return s


# --- Actions -----------------------------------------------------------------------------------------


def test_requeue_action_puts_a_failed_submission_back_in_its_queue(staff: Client, queue: Queue, lms_user: Any) -> None:
    s = submit(queue, lms_user)
    lifecycle.fail_with_notice(s.pk, actor="test")
    # Filtered by status, as an operator would be: the message still counts correctly.
    messages = act(staff, "requeue", s, query="?status__exact=failed")
    assert messages == ["Requeued: 1 submission(s)."]
    assert status_of(s) == Status.QUEUED
    assert last_event(s) == ("failed", "queued", "requeue", "admin:ops")
    assert Submission.objects.get(pk=s.pk).attempts == 0


def test_fail_with_notice_action_fails_waiting_submissions_and_skips_finished_ones(
    staff: Client, queue: Queue, lms_user: Any
) -> None:
    waiting = submit(queue, lms_user, "http://127.0.0.1:9/cb/1")
    cancelled = submit(queue, lms_user, "http://127.0.0.1:9/cb/2")
    lifecycle.cancel(cancelled.pk, actor="test")
    messages = act(staff, "fail_with_notice", waiting, cancelled)
    assert messages == [
        "Failed: 1 submission(s).",
        "1 submission(s) were skipped: not in a state that allows it.",
    ]
    failed = Submission.objects.get(pk=waiting.pk)
    assert failed.status == Status.FAILED
    assert failed.lms_body == grades.not_graded_notice()
    assert failed.next_delivery_at is not None  # the notice is due for delivery to the LMS
    assert last_event(waiting) == ("queued", "failed", "operator_fail", "admin:ops")
    assert status_of(cancelled) == Status.CANCELLED


def test_redeliver_action_sends_a_dead_letter_again(
    staff: Client, queue: Queue, lms_user: Any, grader_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    s = dead_letter(queue, lms_user, grader_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        messages = act(staff, "redeliver", s)
    assert messages == ["Redelivering: 1 submission(s)."]
    assert status_of(s) == Status.GRADED
    assert last_event(s) == ("dead_letter", "graded", "redeliver", "admin:ops")
    assert Submission.objects.get(pk=s.pk).next_delivery_at <= timezone.now()
    assert len(callbacks) == 1  # the delivery task is enqueued once the transaction commits


def test_cancel_action_cancels_and_the_submission_is_never_handed_out(
    staff: Client, queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    s = submit(queue, lms_user)
    assert act(staff, "cancel", s) == ["Cancelled: 1 submission(s)."]
    assert status_of(s) == Status.CANCELLED
    assert lifecycle.lease_next(queue, grader_user) is None


def test_the_change_form_cannot_edit_the_status(staff: Client, queue: Queue, lms_user: Any) -> None:
    s = submit(queue, lms_user)
    staff.post(
        f"{CHANGELIST}{s.pk}/change/",
        {"status": "delivered", "lms_body": "x", "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"},
    )
    assert status_of(s) == Status.QUEUED
    assert staff.get(f"{CHANGELIST}add/").status_code == 403


# --- List, filters and timeline -----------------------------------------------------------------------


def test_list_filters_by_queue_status_and_age(staff: Client, queue: Queue, other_queue: Queue, lms_user: Any) -> None:
    now = timezone.now()
    with time_machine.travel(now - timedelta(hours=3), tick=False):
        old = submit(queue, lms_user, "http://127.0.0.1:9/cb/1")
    with time_machine.travel(now - timedelta(minutes=10), tick=False):
        middle = submit(queue, lms_user, "http://127.0.0.1:9/cb/2")
        lifecycle.cancel(middle.pk, actor="test")
    fresh = submit(other_queue, lms_user, "http://127.0.0.1:9/cb/3")

    assert listed(staff, "") == {old.pk, middle.pk, fresh.pk}
    assert listed(staff, f"?queue__id__exact={queue.pk}") == {old.pk, middle.pk}
    assert listed(staff, "?status__exact=queued") == {old.pk, fresh.pk}
    assert listed(staff, "?age=lt5m") == {fresh.pk}
    assert listed(staff, "?age=5m-30m") == {middle.pk}
    assert listed(staff, "?age=2h-1d") == {old.pk}
    assert listed(staff, f"?age=2h-1d&status__exact=queued&queue__id__exact={queue.pk}") == {old.pk}
    page = staff.get(CHANGELIST).content.decode()
    for title in ("By status", "By queue", "By age", "Over 1 day"):
        assert title in page


def test_change_view_shows_the_timeline_of_events(staff: Client, queue: Queue, lms_user: Any, grader_user: Any) -> None:
    s = submit(queue, lms_user)
    lease = lifecycle.lease_next(queue, grader_user)
    lifecycle.accept_result(s.pk, lease.key, "not json", grader_user, [queue.pk])
    assert lifecycle.score_and_claim(s.pk) is None  # no grade to claim a delivery for: it failed
    page = staff.get(f"{CHANGELIST}{s.pk}/change/").content.decode()
    assert "Timeline" in page
    for reason in ("submitted", "lease", "result", "invalid_reply"):
        assert f"<p>{reason}</p>" in page or f">{reason}<" in page
    assert page.index("submitted") < page.index("invalid_reply")


# --- Who may get in ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/", CHANGELIST, "/admin/grading/queue/", "/ops/status/"])
def test_grader_and_lms_accounts_cannot_reach_the_admin_or_the_status_page(
    grader_client: Client, lms_client: Client, path: str
) -> None:
    for client in (grader_client, lms_client):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_grader_and_lms_credentials_do_not_log_in_to_the_admin(grader_user: Any, lms_user: Any) -> None:
    for username, password in (("grader", GRADER_PASSWORD), ("lms", LMS_PASSWORD)):
        client = Client()
        response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
        assert response.status_code == 200
        assert "staff account" in response.content.decode()
        assert client.get("/admin/").status_code == 302


def test_an_xqueue_login_session_does_not_open_the_admin(grader_user: Any) -> None:
    client = Client()
    reply = client.post("/xqueue/login/", {"username": "grader", "password": GRADER_PASSWORD})
    assert reply.json() == {"return_code": 0, "content": "Logged in"}
    assert client.get(CHANGELIST).status_code == 302


def test_the_admin_refuses_an_http_queue_without_a_grader_url(staff: Client) -> None:
    form = {
        "name": "py-http",
        "mode": "http",
        "push_url": "",
        "push_username": "",
        "push_password": "",
        "grants-TOTAL_FORMS": "0",
        "grants-INITIAL_FORMS": "0",
    }
    response = staff.post("/admin/grading/queue/add/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "A queue in http mode needs a grader URL (push_url)." in response.content.decode()
    assert not Queue.objects.filter(name="py-http").exists()

    response = staff.post("/admin/grading/queue/add/", {**form, "push_url": "http://127.0.0.1:1710/"})
    assert response.status_code == 302
    assert Queue.objects.get(name="py-http").push_url == "http://127.0.0.1:1710/"


# --- A list that stays cheap with a semester of submissions kept ----------------------------------------


def test_search_finds_a_submission_by_its_id_or_its_whole_callback_url(
    staff: Client, queue: Queue, lms_user: Any
) -> None:
    first = submit(queue, lms_user, "http://127.0.0.1:9/cb/block-7/score_update")
    second = submit(queue, lms_user, "http://127.0.0.1:9/cb/block-8/score_update")
    assert listed(staff, f"?q={second.pk}") == {second.pk}
    assert listed(staff, "?q=http://127.0.0.1:9/cb/block-7/score_update") == {first.pk}
    assert listed(staff, "?q=%20http://127.0.0.1:9/cb/block-8/score_update%20") == {second.pk}
    # Part of a URL would be a walk over every kept row: it finds nothing.
    assert listed(staff, "?q=block-7") == set()


def test_the_list_counts_matching_rows_only_up_to_its_cap(
    staff: Client, queue: Queue, lms_user: Any, monkeypatch: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from grading.admin import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "CAP", 3)
    for i in range(5):
        submit(queue, lms_user, f"http://127.0.0.1:9/cb/{i}")
    with CaptureQueriesContext(connection) as captured:
        response = staff.get(CHANGELIST + "?status__exact=queued")
    assert response.context["cl"].result_count == 3
    assert response.context["cl"].full_result_count is None
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1
    assert "LIMIT 3" in counts[0].upper()


def test_submissions_cannot_be_deleted_from_the_admin(staff: Client, queue: Queue, lms_user: Any) -> None:
    s = submit(queue, lms_user)
    assert staff.get(f"{CHANGELIST}{s.pk}/delete/").status_code == 403
    actions = [name for name, _ in staff.get(CHANGELIST).context["action_form"].fields["action"].choices]
    assert actions == ["", "requeue", "fail_with_notice", "redeliver", "cancel"]
    assert Submission.objects.filter(pk=s.pk).exists()
