"""Cached accounts and grants never outlive a change made through the ORM (admin, commands)."""

from __future__ import annotations

import json
from datetime import datetime
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


def test_a_grader_granted_1000_queues_is_answered_from_plain_rows_shared_between_processes(
    queue: Queue, grader_user: Any
) -> None:
    """The shared entry holds column values, not pickled Queue objects (1 000 of them took 10-50 ms to load)."""
    from django.core.cache import cache

    queues = Queue.objects.bulk_create(
        [Queue(name=f"q{i:04d}", lease_seconds=i + 1 if i % 2 else None) for i in range(1000)]
    )
    QueueGrant.objects.bulk_create([QueueGrant(user=grader_user, queue=q, role=Role.GRADER) for q in queues])
    access.forget(grader_user.pk)  # bulk_create sends no signals
    assert access.queue_for(grader_user, "q0501", Role.GRADER).lease_seconds == 502
    shared = cache.get(access._key(grader_user.pk, (Role.GRADER.value,)))
    assert len(shared) == 1001  # and the fixture's queue
    assert {type(row) for row in shared.values()} == {tuple}
    assert all(type(value) in (int, str, bool, datetime, type(None)) for row in shared.values() for value in row)
    # Another process (no local copy) builds the Queues from those rows, with every setting.
    localcache.clear()
    fresh = access.queue_for(grader_user, "q0501", Role.GRADER)
    assert (fresh.pk, fresh.name, fresh.lease_seconds) == (queues[501].pk, "q0501", 502)
    assert access.queue_for(grader_user, "q0500", Role.GRADER).lease_seconds is None
    assert access.queue_for(grader_user, "q0501", Role.GRADER) is fresh  # built once per process and table
    assert access.queue_for(grader_user, "q1000", Role.GRADER) is None
    assert access.queue_for(grader_user, "q0501", Role.LMS) is None
    assert access.queue_ids(grader_user, Role.GRADER) == sorted([queue.pk] + [q.pk for q in queues])
    assert access.queue_names(grader_user, Role.GRADER)[:2] == ["q0000", "q0001"]
    assert len(access.granted(grader_user, Role.GRADER)) == 1001
