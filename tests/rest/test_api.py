"""The JSON API (/api/v1/): tokens, who sees what, submit and results, operator actions, problem details."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from openapi_spec_validator import validate

from grading import delivery, lifecycle
from grading.models import ApiToken, Queue, Role, Status, Submission
from grading.rest import tokens
from tests.conftest import make_account, stored_files, submit
from tests.lms import FakeLMS
from tests.xqclient import grade

pytestmark = pytest.mark.django_db


class Api:
    """A JSON API client holding one bearer token."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params, headers=self.headers)

    def post(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        if ("content_type" not in kwargs and not isinstance(data, dict | None)) or kwargs.get("multipart"):
            kwargs.pop("multipart", None)
            return self.client.post(path, data, headers=self.headers, **kwargs)
        body = kwargs.pop("raw", None)
        if body is None:
            body = json.dumps(data if data is not None else {})
        return self.client.post(
            path, body, content_type=kwargs.pop("content_type", "application/json"), headers=self.headers
        )

    def patch(self, path: str, data: Any) -> Any:
        return self.client.patch(path, json.dumps(data), content_type="application/json", headers=self.headers)


def token_for(user: Any, **kwargs: Any) -> str:
    return tokens.issue(user, **kwargs)[1]


@pytest.fixture
def ops() -> Api:
    user = get_user_model().objects.create_user("ops", password="ops-password-1", is_staff=True)
    return Api(token_for(user))


@pytest.fixture
def lms_api(lms_user: Any) -> Api:
    return Api(token_for(lms_user))


def is_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/problem+json"
    body = json.loads(response.content)
    assert body["status"] == status and body["type"] == "about:blank" and body["title"] and body["detail"]
    return body


def test_the_schema_is_valid_openapi_3_and_describes_only_the_json_api() -> None:
    response = Client().get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/api/v1/queues/",
        "/api/v1/queues/{name}/",
        "/api/v1/submissions/",
        "/api/v1/submissions/{id}/",
        "/api/v1/submissions/{id}/{action}/",
        "/api/v1/bulk/{action}/",
    }
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `manage.py create_api_token`.",
    }
    docs = Client().get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content


def test_create_api_token_prints_it_once_and_stores_only_its_hash(lms_user: Any) -> None:
    out = io.StringIO()
    call_command("create_api_token", "lms", "--name", "scripts", "--days", "30", stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip()
    assert token.startswith("gqt_") and len(token) == 4 + 43
    row = ApiToken.objects.get()
    assert row.digest != token and token not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert row.prefix == token[:12] and row.name == "scripts"
    assert timedelta(days=29.9) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert Api(token).get("/api/v1/queues/").status_code == 200

    call_command("create_api_token", "--revoke", row.prefix, stdout=io.StringIO())
    is_problem(Api(token).get("/api/v1/queues/"), 401)


def test_no_token_a_wrong_one_and_an_expired_one_answer_401_with_a_bearer_challenge(lms_user: Any) -> None:
    token = token_for(lms_user, days=1)
    for api in (Api(None), Api("gqt_not-a-token"), Api("\x00"), Api("Bearer x y")):
        response = api.get("/api/v1/queues/")
        is_problem(response, 401)
        assert response["WWW-Authenticate"] == 'Bearer realm="gradequeue"'
    assert Api(token).get("/api/v1/queues/").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        is_problem(Api(token).get("/api/v1/queues/"), 401)


def test_an_account_sees_only_its_queues_and_its_own_submissions(queue: Queue, other_queue: Queue) -> None:
    mine = make_account("lms-a", "pw-a-1", Role.LMS, queue)
    theirs = make_account("lms-b", "pw-b-1", Role.LMS, queue, other_queue)
    own = submit(queue, mine, lms_key="a")
    foreign = submit(queue, theirs, callback_url="http://127.0.0.1:9/b", lms_key="b")
    elsewhere = submit(other_queue, theirs, callback_url="http://127.0.0.1:9/c", lms_key="c")
    api = Api(token_for(mine))

    assert [q["name"] for q in json.loads(api.get("/api/v1/queues/").content)] == ["test-123"]
    is_problem(api.get("/api/v1/queues/other-queue/"), 404)
    listed = json.loads(api.get("/api/v1/submissions/").content)["results"]
    assert [s["id"] for s in listed] == [own.pk]
    assert api.get(f"/api/v1/submissions/{own.pk}/").status_code == 200
    for hidden in (foreign, elsewhere):
        is_problem(api.get(f"/api/v1/submissions/{hidden.pk}/"), 404)
    # Not an operator: no actions, no queue changes.
    is_problem(api.post(f"/api/v1/submissions/{own.pk}/cancel/"), 403)
    is_problem(api.post("/api/v1/queues/", {"name": "new"}), 403)
    is_problem(
        api.post(
            "/api/v1/submissions/", {"queue": "other-queue", "lms_callback_url": "http://127.0.0.1:9/x", "body": "{}"}
        ),
        400,
    )
    assert Submission.objects.get(pk=own.pk).status == Status.QUEUED


def test_a_json_submission_is_graded_and_its_grade_posted_to_the_callback_as_for_xqueue(
    lms_api: Api, queue: Queue, grader_user: Any, fake_lms: FakeLMS
) -> None:
    url = fake_lms.callback_url()
    response = lms_api.post(
        "/api/v1/submissions/",
        {
            "queue": "test-123",
            "lms_callback_url": url,
            "lms_key": "k-7",
            "body": '{"student_response": "42"}',
            "header": {"course": "c1"},
        },
    )
    assert response.status_code == 201, response.content
    created = json.loads(response.content)
    assert created["status"] == "queued" and created["queue_length"] == 1
    assert created["url"] == f"http://testserver/api/v1/submissions/{created['id']}/" == response["Location"]

    lease = lifecycle.lease_next(queue, grader_user)
    assert lease.body == '{"student_response": "42"}'
    lifecycle.accept_result(lease.submission_id, lease.key, grade(), grader_user, [queue.pk])
    claim = lifecycle.score_and_claim(lease.submission_id)
    assert claim is not None
    assert delivery.send(claim) == lifecycle.DeliveryOutcome.DELIVERED
    (callback,) = fake_lms.callbacks
    assert json.loads(callback.header) == {
        "course": "c1",
        "lms_callback_url": url,
        "lms_key": "k-7",
        "queue_name": "test-123",
    }
    assert callback.body == grade()

    detail = json.loads(lms_api.get(f"/api/v1/submissions/{created['id']}/").content)
    assert (detail["status"], detail["result"], detail["delivery_attempts"]) == ("delivered", grade(), 1)
    assert [(e["from_status"], e["to_status"]) for e in detail["timeline"]][-2:] == [
        ("returned", "graded"),
        ("graded", "delivered"),
    ]


def test_a_multipart_submission_carries_its_files(lms_api: Api, queue: Queue) -> None:
    response = lms_api.client.post(
        "/api/v1/submissions/",
        {
            "queue": "test-123",
            "lms_callback_url": "http://127.0.0.1:9/cb",
            "body": "{}",
            "header": '{"extra": 1}',
            "answer.py": SimpleUploadedFile("answer.py", b"print(42)\n"),
        },
        headers=lms_api.headers,
    )
    assert response.status_code == 201, response.content
    submission = Submission.objects.get()
    assert list(submission.files) == ["answer.py"]
    assert json.loads(submission.lms_header)["extra"] == 1


def test_a_multipart_submission_the_database_fails_to_record_leaves_none_of_its_files(
    lms_api: Api, queue: Queue, monkeypatch: Any
) -> None:
    def lost_connection(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(lifecycle, "submit", lost_connection)
    response = lms_api.client.post(
        "/api/v1/submissions/",
        {
            "queue": "test-123",
            "lms_callback_url": "http://127.0.0.1:9/cb",
            "body": "{}",
            "answer.py": SimpleUploadedFile("answer.py", b"print(42)\n"),
        },
        headers=lms_api.headers,
    )
    assert is_problem(response, 503)["detail"] == "The database is unavailable; try again shortly."
    assert stored_files() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queue": "test-123", "lms_callback_url": "http://127.0.0.1:9/cb", "body": "a\x00b"}, "body"),
        ({"queue": "test-123", "lms_callback_url": "http://127.0.0.1:9/cb\ud800", "body": "{}"}, "lms_callback_url"),
        ({"queue": "test-123", "lms_callback_url": "http://127.0.0.1:9/cb", "body": "{}", "lms_key": 5}, "lms_key"),
        ({"queue": "test-123", "lms_callback_url": "http://evil.example.org/cb", "body": "{}"}, "detail"),
        ({"queue": ["test-123"], "lms_callback_url": "http://127.0.0.1:9/cb", "body": "{}"}, "queue"),
        ({"lms_callback_url": "http://127.0.0.1:9/cb", "body": "{}"}, "queue"),
    ],
)
def test_refused_submissions_answer_400_naming_the_field_and_store_nothing(
    lms_api: Api, queue: Queue, body: dict[str, Any], field: str
) -> None:
    raw = json.dumps(body)  # lone surrogates as JSON escapes, as a hostile client sends them
    problem = is_problem(lms_api.post("/api/v1/submissions/", raw=raw), 400)
    assert field in problem["errors"]
    assert not Submission.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("body", "a\x00b", "must not contain a NUL character (U+0000)"),
        ("lms_callback_url", "http://127.0.0.1:9/cb\udfff", "must not contain a lone surrogate (U+DFFF)"),
        ("lms_key", "\ud800k", "must not contain a lone surrogate (U+D800)"),
    ],
)
def test_a_refused_character_is_named_as_the_xqueue_endpoints_name_it(
    lms_api: Api, queue: Queue, field: str, value: str, message: str
) -> None:
    body = {"queue": "test-123", "lms_callback_url": "http://127.0.0.1:9/cb", "body": "{}", field: value}
    problem = is_problem(lms_api.post("/api/v1/submissions/", raw=json.dumps(body)), 400)
    assert problem["errors"] == {field: [message]}
    assert not Submission.objects.exists()


@pytest.mark.parametrize(
    "raw",
    ["[" * 100000, '{"queue": ' + "9" * 5000 + "}", "{not json", '"\\ud800"', b"\xff\xfe".decode("latin-1")],
)
def test_hostile_bodies_answer_400_not_500(lms_api: Api, queue: Queue, raw: str) -> None:
    is_problem(lms_api.post("/api/v1/submissions/", raw=raw), 400)
    assert not Submission.objects.exists()


def test_operator_actions_go_through_the_lifecycle_and_are_recorded_with_the_token_account(
    ops: Api, queue: Queue, lms_user: Any
) -> None:
    s = submit(queue, lms_user)
    response = ops.post(f"/api/v1/submissions/{s.pk}/fail/")
    assert response.status_code == 200, response.content
    assert json.loads(response.content)["status"] == "failed"
    event = s.events.last()
    assert (event.to_status, event.reason, event.actor) == ("failed", "operator_fail", "api:ops")

    assert ops.post(f"/api/v1/submissions/{s.pk}/requeue/").status_code == 200
    assert ops.post(f"/api/v1/submissions/{s.pk}/cancel/").status_code == 200
    assert Submission.objects.get(pk=s.pk).status == Status.CANCELLED
    conflict = is_problem(ops.post(f"/api/v1/submissions/{s.pk}/requeue/"), 409)
    assert "cancelled" in conflict["detail"]
    is_problem(ops.post(f"/api/v1/submissions/{s.pk}/explode/"), 404)
    is_problem(ops.post("/api/v1/submissions/999999/cancel/"), 404)


def test_redeliver_sends_a_dead_letter_again(ops: Api, queue: Queue, lms_user: Any) -> None:
    s = submit(queue, lms_user)
    Submission.objects.filter(pk=s.pk).update(status=Status.DEAD_LETTER, lms_body=grade())
    assert json.loads(ops.post(f"/api/v1/submissions/{s.pk}/redeliver/").content)["status"] == "graded"
    assert s.events.last().actor == "api:ops"


def test_a_bulk_action_takes_a_filter_and_acts_on_what_matches(
    ops: Api, queue: Queue, other_queue: Queue, lms_user: Any
) -> None:
    here = [submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/{i}", lms_key=str(i)) for i in range(3)]
    there = submit(other_queue, lms_user, callback_url="http://127.0.0.1:9/o")
    is_problem(ops.post("/api/v1/bulk/cancel/", {}), 400)  # no filter: refused, not "everything"
    is_problem(ops.post("/api/v1/bulk/cancel/", {"older_than": "9"}), 400)  # a number, not text
    response = ops.post("/api/v1/bulk/cancel/", {"queue": "test-123", "status": "queued", "limit": 2})
    assert json.loads(response.content) == {"matched": 2, "changed": [here[0].pk, here[1].pk]}
    statuses = dict(Submission.objects.values_list("pk", "status"))
    assert [statuses[s.pk] for s in here] == ["cancelled", "cancelled", "queued"]
    assert statuses[there.pk] == "queued"


def test_queues_show_live_figures_and_operators_create_and_update_them(ops: Api, queue: Queue, lms_user: Any) -> None:
    submit(queue, lms_user)
    figures = json.loads(ops.get("/api/v1/queues/test-123/").content)["figures"]
    assert figures["waiting"] == 1 and figures["leased"] == 0 and figures["dead_letter"] == 0
    assert figures["oldest_waiting_age_seconds"] >= 0

    is_problem(ops.post("/api/v1/queues/", {"name": "py-http", "mode": "http"}), 400)
    created = ops.post("/api/v1/queues/", {"name": "py-2", "lease_seconds": 600, "max_attempts": 2})
    assert created.status_code == 201, created.content
    is_problem(ops.post("/api/v1/queues/", {"name": "py-2"}), 400)
    assert ops.patch("/api/v1/queues/py-2/", {"max_in_flight": 4}).status_code == 200
    row = Queue.objects.get(name="py-2")
    assert (row.lease_seconds, row.max_attempts, row.max_in_flight) == (600, 2, 4)
    is_problem(ops.patch("/api/v1/queues/py-2/", {"name": "renamed"}), 400)


def test_submissions_page_newest_first_by_cursor_with_filters(ops: Api, queue: Queue, lms_user: Any) -> None:
    made = [submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/{i}", lms_key=f"k{i}").pk for i in range(25)]
    seen: list[int] = []
    url: str | None = "/api/v1/submissions/?page_size=10&queue=test-123"
    pages = 0
    while url:
        page = json.loads(ops.client.get(url, headers=ops.headers).content)
        seen += [s["id"] for s in page["results"]]
        url = page["next"]
        pages += 1
    assert pages == 3 and seen == sorted(made, reverse=True)
    only = json.loads(ops.get("/api/v1/submissions/", lms_key="k3").content)["results"]
    assert [s["id"] for s in only] == [made[3]]
    is_problem(ops.get("/api/v1/submissions/", older_than="²"), 400)
    is_problem(ops.get("/api/v1/submissions/", status="nope"), 400)
    assert json.loads(ops.get("/api/v1/submissions/", older_than="3600").content)["results"] == []
    # A mistyped filter is refused, not ignored (it would select everything).
    assert "stauts" in is_problem(ops.get("/api/v1/submissions/", stauts="failed"), 400)["detail"]
