"""Fixtures of the task tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the task messages that would have been sent (none is: no worker acts behind the test's back)."""
    from celery_app import app

    sent: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, *args, **kwargs: sent.append(name))
    return sent
