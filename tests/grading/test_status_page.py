"""The staff status page and the depth samples behind its chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from grading import lifecycle, stats
from grading.models import Queue, QueueSample
from tests.conftest import submit

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_user("ops", password="x", is_staff=True))
    return client


def test_take_samples_records_each_queue_and_forgets_old_samples(
    queue: Queue, other_queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    with time_machine.travel(T0, tick=False):
        submit(queue, lms_user, "http://127.0.0.1:9/cb/1")
        submit(queue, lms_user, "http://127.0.0.1:9/cb/2")
        lifecycle.lease_next(queue, grader_user)
        assert stats.take_samples() == 2
    assert set(QueueSample.objects.values_list("queue__name", "taken_at", "waiting", "leased")) == {
        ("test-123", T0, 1, 1),
        ("other-queue", T0, 0, 0),
    }
    with time_machine.travel(T0 + timedelta(hours=25), tick=False):
        stats.take_samples()
    assert set(QueueSample.objects.values_list("taken_at", flat=True)) == {T0 + timedelta(hours=25)}


def test_sync_schedule_installs_the_sampling_task() -> None:
    from django_celery_beat.models import PeriodicTask

    call_command("sync_schedule", stdout=None)
    task = PeriodicTask.objects.get(task="grading.sample_queue_depth")
    assert (task.enabled, task.interval.every) == (True, 30)


def test_status_page_shows_depth_oldest_age_and_a_chart_of_the_last_hour(
    staff: Client, queue: Queue, other_queue: Queue, lms_user: Any, grader_user: Any
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for minute in range(0, 60, 10):  # the queue fills up over the hour: 0, 2, 4, ... waiting
            stats.take_samples()
            submit(queue, lms_user, f"http://127.0.0.1:9/cb/{minute}a")
            submit(queue, lms_user, f"http://127.0.0.1:9/cb/{minute}b")
            clock.shift(600)
        lifecycle.lease_next(queue, grader_user)
        response = staff.get("/ops/status/")
    assert response.status_code == 200
    page = response.content.decode()
    row = re.search(r'<tr data-queue="test-123">(.*?)</tr>', page, re.S).group(1)
    assert '<td class="waiting">11</td>' in row
    assert '<td class="leased">1</td>' in row
    assert '<td class="oldest">1h00m</td>' in row
    waiting = re.search(r'class="waiting-line"[^>]*points="([^"]+)"', row).group(1).split()
    # Six samples plus the current depth; x runs across the hour, y rises as the queue fills.
    assert len(waiting) == 7
    xs = [float(p.split(",")[0]) for p in waiting]
    ys = [float(p.split(",")[1]) for p in waiting]
    assert xs == sorted(xs) and xs[-1] == 240.0
    assert ys == sorted(ys, reverse=True)
    assert "peak 11" in row
    other = re.search(r'<tr data-queue="other-queue">(.*?)</tr>', page, re.S).group(1)
    assert '<td class="waiting">0</td>' in other and '<td class="oldest">-</td>' in other
    assert 'id="total-waiting">11<' in page
    assert '<meta http-equiv="refresh"' in page


def test_status_page_says_when_there_are_no_samples_yet(staff: Client, queue: Queue) -> None:
    page = staff.get("/ops/status/").content.decode()
    assert "no samples in the last hour yet" in page


def test_status_page_is_for_staff_only(queue: Queue) -> None:
    response = Client().get("/ops/status/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
