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
