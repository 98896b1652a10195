"""Accounts: failed logins throttled per account and per address, sessions expire, API accounts stay out
of the admin, passwords use Django's default hasher, keys are unguessable."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.conf import global_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from grading import lifecycle
from grading.models import QueueGrant, Role, Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, lms_header, submit

THROTTLED = re.compile(r"^Too many failed logins; try again in (\d+) seconds$")


def login(username: str, password: str, address: str = "10.0.0.1", **extra: Any) -> dict[str, Any]:
    response = Client(REMOTE_ADDR=address).post("/xqueue/login/", {"username": username, "password": password}, **extra)
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.fixture
def limits(settings: Any) -> None:
    settings.GRADEQUEUE = {
        **settings.GRADEQUEUE,
        "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": 3,
        "LOGIN_FAILURES_PER_ADDRESS": 5,
        "LOGIN_THROTTLE_SECONDS": 600,
    }


def wrong(username: str, address: str = "10.0.0.1") -> None:
    assert login(username, "wrong-password", address) == {"return_code": 1, "content": "Incorrect login credentials"}


def test_a_guesser_elsewhere_never_locks_the_real_client_out(lms_user: Any, limits: None) -> None:
    for _ in range(30):
        login("lms", "a-guess", "198.51.100.66")
    # The guesser's address waits for this account, even with the right password...
    match = THROTTLED.match(login("lms", LMS_PASSWORD, "198.51.100.66")["content"])
    assert match and 590 <= int(match.group(1)) <= 600
    # ...while the real client, at its own address, logs in as always.
    assert login("lms", LMS_PASSWORD, "10.0.0.1") == {"return_code": 0, "content": "Logged in"}


def test_an_account_waits_from_the_failing_address_only(lms_user: Any, limits: None) -> None:
    for _ in range(3):
        wrong("lms", "10.0.0.1")
    assert THROTTLED.match(login("lms", LMS_PASSWORD, "10.0.0.1")["content"])
    assert login("lms", LMS_PASSWORD, "10.0.0.2") == {"return_code": 0, "content": "Logged in"}
    # Failures of the same account from different addresses are counted apart.
    for address in ("10.0.0.3", "10.0.0.4", "10.0.0.5"):
        wrong("lms", address)
    assert login("lms", LMS_PASSWORD, "10.0.0.6") == {"return_code": 0, "content": "Logged in"}


def test_thirty_failures_from_one_address_lock_no_account_for_other_addresses(lms_user: Any, grader_user: Any) -> None:
    # The default limits: 10 per account and address, 50 per address.
    for i in range(30):
        login("lms" if i % 2 else f"guess{i}", "a-guess", "203.0.113.9")
    assert THROTTLED.match(login("lms", LMS_PASSWORD, "203.0.113.9")["content"])  # 15 > 10 for lms there
    assert login("grader", GRADER_PASSWORD, "203.0.113.9") == {"return_code": 0, "content": "Logged in"}  # 30 < 50
    assert login("lms", LMS_PASSWORD, "203.0.113.10") == {"return_code": 0, "content": "Logged in"}
    assert login("grader", GRADER_PASSWORD, "203.0.113.10") == {"return_code": 0, "content": "Logged in"}


def test_the_account_throttle_ends_by_itself(lms_user: Any, limits: None) -> None:
    for _ in range(3):
        wrong("lms")
    with time_machine.travel(timezone.now() + timedelta(seconds=300)):
        match = THROTTLED.match(login("lms", LMS_PASSWORD)["content"])
        assert match and 295 <= int(match.group(1)) <= 300
    with time_machine.travel(timezone.now() + timedelta(seconds=601)):
        assert login("lms", LMS_PASSWORD) == {"return_code": 0, "content": "Logged in"}


def test_user_name_case_does_not_dodge_the_account_throttle(lms_user: Any, limits: None) -> None:
    for name in ("lms", "LMS", " Lms"):
        wrong(name)
    assert THROTTLED.match(login("lms", LMS_PASSWORD)["content"])
    assert login("lms", LMS_PASSWORD, "10.0.0.2")["return_code"] == 0


def test_an_address_is_throttled_after_failures_across_accounts(lms_user: Any, grader_user: Any, limits: None) -> None:
    for i in range(5):
        wrong(f"guess{i}", "10.9.9.9")
    assert THROTTLED.match(login("grader", GRADER_PASSWORD, "10.9.9.9")["content"])
    assert login("grader", GRADER_PASSWORD, "10.9.9.8") == {"return_code": 0, "content": "Logged in"}


def test_a_successful_login_clears_the_account_counter_but_not_the_address_counter(lms_user: Any, limits: None) -> None:
    wrong("lms")
    wrong("lms")
    assert login("lms", LMS_PASSWORD)["return_code"] == 0
    wrong("lms")
    wrong("lms")
    assert login("lms", LMS_PASSWORD)["return_code"] == 0  # 2 + 2 failures, never 3 in a row
    wrong("lms")  # the address's fifth failure
    assert THROTTLED.match(login("lms", LMS_PASSWORD)["content"])


def test_behind_a_proxy_the_last_forwarded_address_counts(lms_user: Any, limits: None, settings: Any) -> None:
    settings.GRADEQUEUE = {
        **settings.GRADEQUEUE,
        "LOGIN_CLIENT_ADDRESS_HEADER": "X-Forwarded-For",
        "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": 100,
    }
    for i in range(5):
        # The client forges the first entry each time; the proxy's last entry is the real address.
        assert login("lms", "nope", "10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.1.1.{i}, 203.0.113.7")["return_code"] == 1
    assert THROTTLED.match(
        login("lms", LMS_PASSWORD, "10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.99, 203.0.113.7")["content"]
    )
    assert login("lms", LMS_PASSWORD, "10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.8")["return_code"] == 0


def test_sessions_expire(lms_client: Client, queue: Any, settings: Any) -> None:
    assert lms_client.get("/xqueue/get_queuelen/?queue_name=test-123").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE + 1)):
        response = lms_client.get("/xqueue/get_queuelen/?queue_name=test-123")
    assert response.status_code == 302
    assert response["Location"].startswith("/xqueue/login/")


@pytest.mark.parametrize("account", ["lms", "grader"])
def test_api_accounts_cannot_reach_the_admin(lms_user: Any, grader_user: Any, account: str) -> None:
    password = LMS_PASSWORD if account == "lms" else GRADER_PASSWORD
    client = Client()
    assert json.loads(client.post("/xqueue/login/", {"username": account, "password": password}).content) == {
        "return_code": 0,
        "content": "Logged in",
    }
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.get("/admin/grading/submission/").status_code == 302
    # Nor can they log in through the admin's own form.
    page = client.post("/admin/login/?next=/admin/", {"username": account, "password": password})
    assert page.status_code == 200 and b"staff account" in page.content
    assert client.get("/admin/").status_code == 302


def test_staff_reach_the_admin(db: Any) -> None:
    get_user_model().objects.create_superuser("ops", password="ops-password-1")
    client = Client()
    client.login(username="ops", password="ops-password-1")
    assert client.get("/admin/").status_code == 200


def test_accounts_are_created_without_staff_rights_and_with_djangos_default_hasher(queue: Any, settings: Any) -> None:
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    call_command("create_account", "watcher1", role="grader", queue=["test-123"], password="pw-long-enough-1")
    user = get_user_model().objects.get(username="watcher1")
    assert not user.is_staff and not user.is_superuser
    assert user.password.startswith("pbkdf2_sha256$")
    assert user.check_password("pw-long-enough-1")


def test_the_project_keeps_djangos_default_password_hashers_and_adds_the_machine_secret_one_last() -> None:
    import config.settings as project_settings

    assert project_settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.PBKDF2PasswordHasher"
    assert [
        *global_settings.PASSWORD_HASHERS,
        "grading.credentials.MachineSecretHasher",
    ] == project_settings.PASSWORD_HASHERS


def test_lease_keys_are_long_random_and_never_repeat(queue: Any, lms_user: Any, grader_user: Any) -> None:
    keys = set()
    for i in range(20):
        submit(queue, lms_user, callback_url=f"http://127.0.0.1:9/cb/{i}")
        lease = lifecycle.lease_next(queue, grader_user)
        assert lease is not None
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", lease.key)  # 32 bytes from secrets
        keys.add(lease.key)
    assert len(keys) == 20


API_CALLS = [
    ("post", "/xqueue/submit/", {"xqueue_header": lms_header("http://127.0.0.1:9/cb"), "xqueue_body": "{}"}),
    ("get", "/xqueue/get_submission/", {"queue_name": "test-123"}),
    ("get", "/xqueue/get_queuelen/", {"queue_name": "test-123"}),
    (
        "post",
        "/xqueue/put_result/",
        {"xqueue_header": '{"submission_id": 1, "submission_key": "k"}', "xqueue_body": "{}"},
    ),
]


@pytest.mark.parametrize("kind", ["superuser", "staff"])
@pytest.mark.parametrize(("method", "path", "data"), API_CALLS, ids=[call[1] for call in API_CALLS])
def test_an_admin_session_does_not_act_on_the_xqueue_api(
    queue: Any, lms_user: Any, kind: str, method: str, path: str, data: dict[str, str]
) -> None:
    submitted = submit(queue, lms_user)
    staff = get_user_model().objects.create_user("ops", password="ops-password-1", is_staff=True)
    if kind == "superuser":
        staff.is_superuser = True
        staff.save()
    # Even holding both grants on the queue: staff accounts work in the admin, API accounts on the API.
    for role in (Role.LMS, Role.GRADER):
        QueueGrant.objects.create(user=staff, queue=queue, role=role)
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200  # a live admin session
    response = getattr(client, method)(path, data)
    assert response.status_code == 302
    assert response["Location"].startswith("/xqueue/login/?next=")
    assert list(Submission.objects.values_list("pk", "status")) == [(submitted.pk, Status.QUEUED)]


@pytest.mark.parametrize("kind", ["superuser", "staff"])
def test_an_admin_account_cannot_log_in_to_the_xqueue_api(queue: Any, kind: str) -> None:
    staff = get_user_model().objects.create_user(
        "ops", password="ops-password-1", is_staff=True, is_superuser=kind == "superuser"
    )
    QueueGrant.objects.create(user=staff, queue=queue, role=Role.GRADER)
    client = Client()
    reply = client.post("/xqueue/login/", {"username": "ops", "password": "ops-password-1"})
    assert json.loads(reply.content) == {"return_code": 1, "content": "Incorrect login credentials"}
    assert client.get("/xqueue/get_queuelen/", {"queue_name": "test-123"}).status_code == 302


def test_a_superuser_is_granted_no_queue_by_being_one(queue: Any, other_queue: Any) -> None:
    from grading import access

    root = get_user_model().objects.create_superuser("root", password="root-password-1")
    assert access.queue_names(root) == []
    QueueGrant.objects.create(user=root, queue=other_queue, role=Role.GRADER)
    assert access.queue_names(root) == ["other-queue"]


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_guesses_get_no_more_password_checks_than_the_limit(
    lms_user: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    import threading

    from django.contrib.auth import base_user
    from django.db import connections

    settings.GRADEQUEUE = {
        **settings.GRADEQUEUE,
        "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": 10,
        "LOGIN_FAILURES_PER_ADDRESS": 1000,
    }
    real_check = base_user.check_password
    checks: list[str] = []

    def slow_check(*args: Any, **kwargs: Any) -> bool:
        checks.append("x")
        threading.Event().wait(0.05)  # a slow hash keeps many checks in flight at once
        return real_check(*args, **kwargs)

    monkeypatch.setattr(base_user, "check_password", slow_check)
    start = threading.Barrier(32)
    replies: list[dict[str, Any]] = []

    def guess(i: int) -> None:
        start.wait()
        try:
            replies.append(login("lms", f"guess-{i}", "198.51.100.7"))  # 32 different guesses
        finally:
            connections.close_all()

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(checks) <= 10
    contents = sorted(reply["content"] for reply in replies)
    assert len(contents) == 32
    assert contents.count("Incorrect login credentials") == len(checks)
    assert all(THROTTLED.match(text) for text in contents if text != "Incorrect login credentials")
    # Once the slots are spent, the real password from this address waits too; from another it logs in.
    assert THROTTLED.match(login("lms", LMS_PASSWORD, "198.51.100.7")["content"])
    assert login("lms", LMS_PASSWORD, "198.51.100.8") == {"return_code": 0, "content": "Logged in"}


def test_the_throttle_counts_and_refuses_with_the_cache_unreachable(lms_user: Any, limits: None) -> None:
    import socket

    from django.core.cache import caches

    # A Redis cache on a port nothing listens on: every cache call fails.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead_port}/0",
        }
    }
    from django.test import override_settings

    from grading import throttle

    with override_settings(CACHES=dead):
        with pytest.raises(Exception, match=r"(?i)connect"):
            caches["default"].get("anything")
        for _ in range(3):
            reservation = throttle.reserve("lms", "10.0.0.1")
            assert isinstance(reservation, throttle.Reservation)
            reservation.failed()
        assert 590 <= throttle.retry_after("lms", "10.0.0.1") <= 600
        assert isinstance(throttle.reserve("lms", "10.0.0.1"), int)
        assert throttle.retry_after("lms", "10.0.0.2") == 0


def test_a_first_login_stores_its_session_once(lms_user: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = Client()
    with CaptureQueriesContext(connection) as queries:
        reply = client.post("/xqueue/login/", {"username": "lms", "password": LMS_PASSWORD})
    assert json.loads(reply.content) == {"return_code": 0, "content": "Logged in"}
    writes = [q["sql"].split()[0] for q in queries.captured_queries if "django_session" in q["sql"]]
    assert [w for w in writes if w != "SELECT"] == ["INSERT"]
    assert client.get("/xqueue/get_queuelen/", {"queue_name": "test-123"}).status_code == 200


@pytest.mark.parametrize("cookie", ["an anonymous session", "a session that does not exist"])
def test_a_login_never_keeps_the_session_key_the_client_came_with(lms_user: Any, cookie: str, settings: Any) -> None:
    from importlib import import_module

    from django.contrib.sessions.models import Session

    client = Client()
    if cookie == "an anonymous session":
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        store["seen"] = True
        store.create()
        client.cookies[settings.SESSION_COOKIE_NAME] = store.session_key
    else:
        client.cookies[settings.SESSION_COOKIE_NAME] = "planted0000000000000000000000000"
    before = client.cookies[settings.SESSION_COOKIE_NAME].value
    reply = client.post("/xqueue/login/", {"username": "lms", "password": LMS_PASSWORD})
    assert json.loads(reply.content) == {"return_code": 0, "content": "Logged in"}
    after = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert after != before
    assert list(Session.objects.values_list("session_key", flat=True)) == [after]
    assert client.get("/xqueue/get_queuelen/", {"queue_name": "test-123"}).status_code == 200
