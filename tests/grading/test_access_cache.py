"""Cached accounts and grants never outlive a change made through the ORM (admin, commands)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from grading import access, localcache
from grading.models import Queue, QueueGrant, Role
from tests.conftest import submit

pytestmark = pytest.mark.django_db


def pull(client: Client, queue: Queue) -> dict[str, Any]:
    response = client.get("/xqueue/get_submission/", {"queue_name": queue.name})
    return {
        "status": response.status_code,
        **(json.loads(response.content) if response.status_code == 200 else {}),
    }


def test_a_revoked_grant_is_refused_on_the_next_request(
    queue: Queue, lms_user: Any, grader_user: Any, grader_client: Client
) -> None:
    submit(queue, lms_user, callback_url="http://127.0.0.1:9/cb/1")
    submit(queue, lms_user, callback_url="http://127.0.0.1:9/cb/2")
    assert pull(grader_client, queue)["return_code"] == 0  # granted, and now cached
    QueueGrant.objects.filter(user=grader_user, queue=queue).delete()
    assert pull(grader_client, queue) == {
        "status": 200,
        "return_code": 1,
        "content": f"Queue '{queue.name}' not found",
    }


def test_a_new_grant_is_usable_on_the_next_request(
    queue: Queue, other_queue: Queue, grader_user: Any, grader_client: Client
) -> None:
    assert pull(grader_client, other_queue)["content"] == f"Queue '{other_queue.name}' not found"
    QueueGrant.objects.create(user=grader_user, queue=other_queue, role=Role.GRADER)
    assert pull(grader_client, other_queue)["content"] == f"Queue '{other_queue.name}' is empty"


def test_a_queue_setting_change_reaches_the_next_lease(queue: Queue, lms_user: Any, grader_user: Any) -> None:
    assert access.queue_for(grader_user, queue.name, Role.GRADER).lease_seconds is None
    queue.lease_seconds = 42
    queue.save()
    assert access.queue_for(grader_user, queue.name, Role.GRADER).lease_seconds == 42


def test_a_deactivated_account_is_logged_out_on_the_next_request(
    queue: Queue, grader_user: Any, grader_client: Client
) -> None:
    assert pull(grader_client, queue)["return_code"] == 1  # logged in: the queue is merely empty
    grader_user.is_active = False
    grader_user.save()
    assert pull(grader_client, queue)["status"] == 302


def test_a_password_change_ends_the_accounts_sessions(queue: Queue, grader_user: Any, grader_client: Client) -> None:
    assert pull(grader_client, queue)["status"] == 200
    grader_user.set_password("a-new-password-2")
    grader_user.save()
    assert pull(grader_client, queue)["status"] == 302


def test_the_local_cache_keeps_an_entry_for_its_lifetime_only(settings: Any, monkeypatch: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "LOCAL_CACHE_SECONDS": 5.0}
    clock = [1000.0]
    monkeypatch.setattr(localcache.time, "monotonic", lambda: clock[0])
    localcache.put("k", "v")
    clock[0] += 4.9
    assert localcache.get("k") == "v"
    clock[0] += 0.2
    assert localcache.get("k") is None


def test_the_local_cache_forgets_on_demand_and_can_be_turned_off(settings: Any) -> None:
    localcache.put("k", "v")
    localcache.forget("k")
    assert localcache.get("k") is None
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "LOCAL_CACHE_SECONDS": 0}
    localcache.put("k", "v")
    assert localcache.get("k") is None


def test_a_full_local_cache_makes_room_by_dropping_the_least_recently_used_entry(settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "LOCAL_CACHE_SECONDS": 60.0}
    localcache.clear()
    for n in range(10_000):
        localcache.put(f"k{n}", n)
    assert localcache.get("k0") == 0  # read: now the most recently used
    localcache.put("k10000", 10_000)
    assert (localcache.get("k0"), localcache.get("k1"), localcache.get("k2"), localcache.get("k10000")) == (
        0,
        None,
        2,
        10_000,
    )
    localcache.clear()
