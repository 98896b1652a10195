"""The status page and the admin list in a real headless Chromium (Debian's package, driven by Playwright).

Runs whenever /usr/bin/chromium exists; CI installs it and sets GRADEQUEUE_REQUIRE_BROWSER=1, so there a
missing browser fails instead of skipping. ``UPDATE_SCREENSHOTS=1`` also writes docs/status-page.png.
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from grading import lifecycle
from grading.models import Queue, QueueGrant, QueueSample, Role, Status, Submission
from tests.conftest import submit

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("GRADEQUEUE_REQUIRE_BROWSER"),
        reason="Chromium is not installed (apt-get install chromium); CI always runs this test",
    ),
]


@pytest.fixture
def exam_hour(lms_user: Any, grader_user: Any) -> dict[str, Any]:
    """An exam in progress: python-101 has filled up over the last hour, java-201 is quiet."""
    python = Queue.objects.create(name="python-101")
    java = Queue.objects.create(name="java-201")
    for q in (python, java):
        QueueGrant.objects.create(user=lms_user, queue=q, role=Role.LMS)
        QueueGrant.objects.create(user=grader_user, queue=q, role=Role.GRADER)
    now = timezone.now()
    for i in range(120):  # a sample every 30 s, as beat takes them
        t = now - timedelta(minutes=60) + timedelta(seconds=30 * i)
        QueueSample.objects.create(
            queue=python,
            taken_at=t,
            waiting=int(14 * math.sin(i / 120 * math.pi) ** 2 + i / 12),
            leased=3 if i > 10 else 1,
        )
        QueueSample.objects.create(queue=java, taken_at=t, waiting=1 if 40 < i < 50 else 0, leased=0)
    for student in range(12):
        submit(python, lms_user, f"http://127.0.0.1:9/cb/py/{student}")
    Submission.objects.filter(queue=python).update(created_at=now - timedelta(minutes=7))
    for _ in range(3):
        lifecycle.lease_next(python, grader_user)
    failed = submit(python, lms_user, "http://127.0.0.1:9/cb/py/failed")
    lifecycle.fail_with_notice(failed.pk, actor="test")
    dead = submit(java, lms_user, "http://127.0.0.1:9/cb/java/1")
    lease = lifecycle.lease_next(java, grader_user)
    lifecycle.accept_result(dead.pk, lease.key, '{"correct": true, "score": 1, "msg": "ok"}', grader_user, [java.pk])
    claim = lifecycle.score_and_claim(dead.pk)
    assert claim is not None
    lifecycle.record_delivery(claim, http_status=404, error="", duration_ms=2)
    get_user_model().objects.create_superuser("ops", "ops@example.org", "ops-password-1")
    return {"python": python, "java": java}


def test_status_page_and_admin_list_in_headless_chromium(
    live_server: Any, exam_hour: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    waiting_python = Submission.objects.filter(queue=exam_hour["python"], status=Status.QUEUED).count()
    assert waiting_python == 9
    static_failures: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 520})
        page.on(
            "response", lambda r: static_failures.append(r.url) if "/static/" in r.url and r.status != 200 else None
        )

        # Staff log in through the admin's own login page and land on the status page.
        page.goto(f"{live_server.url}/ops/status/")
        expect(page).to_have_url(f"{live_server.url}/admin/login/?next=/ops/status/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "ops-password-1")
        page.click("input[type=submit]")
        expect(page).to_have_url(f"{live_server.url}/ops/status/")

        python_row = page.locator('tr[data-queue="python-101"]')
        expect(python_row.locator("td.waiting")).to_have_text("9")
        expect(python_row.locator("td.leased")).to_have_text("3")
        expect(python_row.locator("td.oldest")).to_have_text(re.compile(r"^7m[0-5]\ds$"))
        expect(python_row.locator("td.failed")).to_have_text("1")
        java_row = page.locator('tr[data-queue="java-201"]')
        expect(java_row.locator("td.dead-letter")).to_have_text("1")
        expect(page.locator("#total-waiting")).to_have_text("9")
        # The chart is drawn: the samples of the last hour (the oldest may just have left the window) plus the
        # current depth.
        line = python_row.locator("svg.depth-chart polyline.waiting-line")
        points = line.get_attribute("points").split()
        assert len(points) in (120, 121)
        assert float(points[-1].split(",")[0]) == 240.0
        box = python_row.locator("svg.depth-chart").bounding_box()
        assert box is not None and box["width"] == 240 and box["height"] == 48
        assert line.evaluate("el => el.getTotalLength()") > 240
        page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
        if os.environ.get("UPDATE_SCREENSHOTS"):
            DOCS.mkdir(exist_ok=True)
            page.screenshot(path=str(DOCS / "status-page.png"), full_page=True)

        # From the queue's name to its submissions in the admin, filtered, styled, with the age filter.
        python_row.locator("td.queue a").click()
        expect(page.locator("#result_list tbody tr")).to_have_count(13)
        page.click("#changelist-filter >> text=Queued (waiting for a grader)")
        expect(page.locator("#result_list tbody tr")).to_have_count(9)
        expect(page.locator("#changelist-filter")).to_contain_text("By age")
        page.click("#changelist-filter >> text=Over 1 day")
        expect(page.locator("#result_list tbody tr")).to_have_count(0)
        page.go_back()

        # A bulk action from the list, as an operator does it.
        page.locator("#result_list tbody tr input.action-select").first.check()
        page.select_option("select[name=action]", "cancel")
        page.click("button[name=index]")
        expect(page.locator("ul.messagelist")).to_contain_text("Cancelled: 1 submission(s).")
        header_color = page.eval_on_selector("#header", "el => getComputedStyle(el).backgroundColor")
        browser.close()
    assert static_failures == []
    assert header_color not in ("", "rgba(0, 0, 0, 0)")  # the admin's CSS was served
    assert Submission.objects.filter(queue=exam_hour["python"], status=Status.CANCELLED).count() == 1
