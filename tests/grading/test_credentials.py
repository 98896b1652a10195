"""Machine secrets: generated once, stored as a keyed hash, checked without the slow password hasher, never
re-hashed; people's passwords keep PBKDF2; concurrent logins with the same credentials share one check."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import threading
from typing import Any

import pytest
from django.conf import global_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections
from django.test import Client

pytestmark = pytest.mark.django_db


def create(username: str, *extra: str, **options: Any) -> list[str]:
    out = io.StringIO()
    call_command("create_account", username, *extra, stdout=out, **options)
    return out.getvalue().splitlines()


def login(username: str, password: str, address: str = "10.0.0.1") -> dict[str, Any]:
    response = Client(REMOTE_ADDR=address).post("/xqueue/login/", {"username": username, "password": password})
    assert response.status_code == 200
    return json.loads(response.content)


def test_generate_secret_prints_a_256_bit_secret_once_and_stores_only_its_keyed_hash(queue: Any) -> None:
    lines = create("watcher-1", role="grader", queue=["test-123"], generate_secret=True)
    assert lines[0] == "Created account watcher-1 (grader): test-123"
    assert lines[1] == "Secret of watcher-1 (shown only this once; use it as the password):"
    secret = lines[2]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)  # 32 random bytes, URL-safe base64 without padding
    stored = get_user_model().objects.get(username="watcher-1").password
    algorithm, salt, digest = stored.split("$")
    assert algorithm == "gq_hmac_sha256"
    assert secret not in stored
    # HMAC-SHA256 of "salt$secret" under the server key (derived from the secret key when none is set).
    key = hmac.new(
        hashlib.sha256(
            b"gradequeue.credentials.machine-secretgradequeue-development-only-secret-key-do-not-deploy"
        ).digest(),
        b"server-key",
        hashlib.sha256,
    ).digest()
    assert digest == hmac.new(key, f"{salt}${secret}".encode(), hashlib.sha256).hexdigest()
    # Every run makes a new one.
    again = create("watcher-1", role="grader", generate_secret=True)[2]
    assert again != secret
    assert login("watcher-1", secret) == {"return_code": 1, "content": "Incorrect login credentials"}
    assert login("watcher-1", again) == {"return_code": 0, "content": "Logged in"}


def test_a_machine_secret_logs_in_without_the_password_hasher_and_is_never_rehashed(
    queue: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS  # production's, PBKDF2 first
    secret = create("watcher-1", role="grader", queue=["test-123"], generate_secret=True)[2]
    stored = get_user_model().objects.get(username="watcher-1").password
    slow: list[str] = []
    monkeypatch.setattr("django.contrib.auth.base_user.check_password", lambda *a, **k: slow.append("x") or False)
    monkeypatch.setattr("django.contrib.auth.hashers.PBKDF2PasswordHasher.encode", lambda *a, **k: slow.append("x"))
    assert login("watcher-1", secret) == {"return_code": 0, "content": "Logged in"}
    assert login("watcher-1", secret[:-1] + ("A" if secret[-1] != "A" else "B"))["return_code"] == 1
    assert login("watcher-1", "") == {"return_code": 1, "content": "Insufficient login info"}
    assert slow == []
    assert get_user_model().objects.get(username="watcher-1").password == stored  # not "upgraded" to PBKDF2


def test_a_machine_secret_stops_working_when_the_server_key_changes(queue: Any, settings: Any) -> None:
    secret = create("watcher-1", role="grader", queue=["test-123"], generate_secret=True)[2]
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "CREDENTIAL_KEY": "another-server-key"}
    assert login("watcher-1", secret) == {"return_code": 1, "content": "Incorrect login credentials"}
    secret = create("watcher-1", role="grader", generate_secret=True)[2]
    assert login("watcher-1", secret) == {"return_code": 0, "content": "Logged in"}


def test_a_deactivated_machine_account_cannot_log_in(queue: Any) -> None:
    secret = create("watcher-1", role="grader", queue=["test-123"], generate_secret=True)[2]
    get_user_model().objects.filter(username="watcher-1").update(is_active=False)
    assert login("watcher-1", secret) == {"return_code": 1, "content": "Incorrect login credentials"}


def test_existing_passwords_keep_working_with_pbkdf2_and_can_be_switched_to_a_secret(queue: Any, settings: Any) -> None:
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    create("lms", role="lms", queue=["test-123"], password="a-password-someone-chose")
    assert get_user_model().objects.get(username="lms").password.startswith("pbkdf2_sha256$")
    assert login("lms", "a-password-someone-chose") == {"return_code": 0, "content": "Logged in"}
    secret = create("lms", role="lms", generate_secret=True)[2]
    assert get_user_model().objects.get(username="lms").password.startswith("gq_hmac_sha256$")
    assert login("lms", "a-password-someone-chose") == {"return_code": 1, "content": "Incorrect login credentials"}
    assert login("lms", secret) == {"return_code": 0, "content": "Logged in"}


def test_the_admin_names_the_algorithm_of_a_machine_account_without_showing_the_hash(queue: Any, settings: Any) -> None:
    import config.settings as project_settings

    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    create("watcher-1", role="grader", queue=["test-123"], generate_secret=True)
    user = get_user_model().objects.get(username="watcher-1")
    root = get_user_model().objects.create_superuser("root", password="root-password-1")
    client = Client()
    client.force_login(root)
    page = client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert "gq_hmac_sha256" in page
    assert user.password.split("$")[2] not in page


@pytest.mark.django_db(transaction=True)
def test_concurrent_logins_with_the_same_credentials_share_one_password_check(
    lms_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib.auth import base_user

    from tests.conftest import LMS_PASSWORD

    real_check = base_user.check_password
    checks: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def slow_check(*args: Any, **kwargs: Any) -> bool:
        checks.append("x")
        started.set()
        release.wait(10)  # a slow hash, held until every other login has arrived
        return real_check(*args, **kwargs)

    monkeypatch.setattr(base_user, "check_password", slow_check)
    replies: list[dict[str, Any]] = []

    def one() -> None:
        try:
            replies.append(login("lms", LMS_PASSWORD))
        finally:
            connections.close_all()

    first = threading.Thread(target=one)
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=one) for _ in range(7)]
    for thread in others:
        thread.start()
    # The seven wait for the first check: let it finish once they have all joined it.
    from grading import logins

    while logins._flights.sharing() < 7 and all(thread.is_alive() for thread in others):
        threading.Event().wait(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(20)
    assert replies == [{"return_code": 0, "content": "Logged in"}] * 8
    assert checks == ["x"]


def test_the_development_accounts_keep_their_documented_passwords_with_the_fast_hash(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADEQUEUE_DEV", "1")
    out = io.StringIO()
    call_command("dev_setup", base_url="http://127.0.0.1:18040", stdout=out)
    # The conf.d file it prints (JSON, one value per line) names the documented grader credentials.
    assert '"AUTH": [\n      "grader",\n      "grader-dev-password"\n    ]' in out.getvalue()
    for username, password in (("lms", "lms-dev-password"), ("grader", "grader-dev-password")):
        assert get_user_model().objects.get(username=username).password.startswith("gq_hmac_sha256$")
        assert login(username, password) == {"return_code": 0, "content": "Logged in"}


def test_login_fields_that_no_account_can_match_are_refused_in_the_envelope(lms_user: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import LMS_PASSWORD

    client = Client()
    as_file = client.post("/xqueue/login/", {"username": SimpleUploadedFile("lms", b"lms"), "password": LMS_PASSWORD})
    assert json.loads(as_file.content) == {"return_code": 1, "content": "Insufficient login info"}
    password_file = client.post("/xqueue/login/", {"username": "lms", "password": SimpleUploadedFile("pw", b"x")})
    assert json.loads(password_file.content) == {"return_code": 1, "content": "Insufficient login info"}
    # A NUL is refused at the edge, naming the field (README, "What the endpoints accept").
    for username, password, field in (
        ("lms\x00", LMS_PASSWORD, "username"),
        ("l\x00ms", "x", "username"),
        ("lms", LMS_PASSWORD + "\x00", "password"),
    ):
        reply = client.post("/xqueue/login/", {"username": username, "password": password})
        assert reply.status_code == 200
        assert json.loads(reply.content) == {
            "return_code": 1,
            "content": f"'{field}' contains a NUL character (U+0000), which is not accepted",
        }
