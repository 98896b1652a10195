from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.core.cache import cache
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


def test_repeated_login_skips_the_password_hash(grader_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import GRADER_PASSWORD

    assert authenticate(username="grader", password=GRADER_PASSWORD) == grader_user
    checks: list[str] = []
    monkeypatch.setattr("django.contrib.auth.base_user.check_password", lambda *a, **k: checks.append("x") or False)
    assert authenticate(username="grader", password=GRADER_PASSWORD) == grader_user
    assert checks == []


def test_wrong_password_is_never_remembered(grader_user: Any) -> None:
    assert authenticate(username="grader", password="wrong") is None
    assert authenticate(username="grader", password="wrong") is None


def test_changed_password_or_deactivated_account_no_longer_matches(grader_user: Any) -> None:
    from tests.conftest import GRADER_PASSWORD

    assert authenticate(username="grader", password=GRADER_PASSWORD) == grader_user
    grader_user.set_password("a-new-password-1")
    grader_user.save()
    assert authenticate(username="grader", password=GRADER_PASSWORD) is None
    assert authenticate(username="grader", password="a-new-password-1") == grader_user
    grader_user.is_active = False
    grader_user.save()
    assert authenticate(username="grader", password="a-new-password-1") is None


def test_remembered_login_costs_one_query(grader_user: Any) -> None:
    from django.db import connection

    from tests.conftest import GRADER_PASSWORD

    authenticate(username="grader", password=GRADER_PASSWORD)
    with CaptureQueriesContext(connection) as queries:
        authenticate(username="grader", password=GRADER_PASSWORD)
    assert len(queries) == 1


def test_a_login_leaves_the_accounts_cached_copy_and_grants_in_place(grader_user: Any, settings: Any) -> None:
    import json

    from django.test import Client

    from grading import access, localcache
    from grading.auth_backends import CachedCredentialsBackend
    from tests.conftest import GRADER_PASSWORD

    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ACCESS_CACHE_SECONDS": 60.0, "LOCAL_CACHE_SECONDS": 60.0}
    assert access.queue_names(grader_user, "grader") == ["test-123"]
    CachedCredentialsBackend().get_user(grader_user.pk)
    grants_key, user_key = access._key(grader_user.pk, ("grader",)), f"gradequeue:user:{grader_user.pk}"
    assert localcache.get(grants_key) is not None and localcache.get(user_key) is not None
    # Every login writes last_login; that alone must not send the account's other threads back to the database.
    reply = Client().post("/xqueue/login/", {"username": "grader", "password": GRADER_PASSWORD})
    assert json.loads(reply.content) == {"return_code": 0, "content": "Logged in"}
    assert localcache.get(grants_key) is not None and localcache.get(user_key) is not None
    # Any other change of the account still forgets both.
    grader_user.first_name = "Changed"
    grader_user.save()
    assert localcache.get(grants_key) is None and localcache.get(user_key) is None
