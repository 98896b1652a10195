"""The shared cache (Redis) going away: gradequeue goes on, more slowly, and says so once.

A private redis-server of the test's own is stopped under the production server (the shared Redis is never
touched); a real TCP proxy in front of another one shows what happens to entries written meanwhile, and a
listener that never answers stands for a hung Redis.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.cache import cache, caches
from django.test import Client

from grading import rediscache
from grading.models import Queue, Role
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, make_account
from tests.lms import free_port
from tests.support.services import running_server
from tests.tcpproxy import SilentListener, TcpProxy
from tests.xqclient import XQueueClient, grade, lms_body


class PrivateRedis:
    """A redis-server on a port of its own, without persistence; ``stop()`` and ``start()`` again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


def use_cache(settings: Any, port: int, **options: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "grading.rediscache.ResilientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/3",
            "OPTIONS": options,
        }
    }


@pytest.mark.django_db(transaction=True)
def test_logins_polling_and_results_keep_working_over_http_while_the_cache_is_down(
    settings: Any, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    queue = Queue.objects.create(name="served")
    make_account("lms", LMS_PASSWORD, Role.LMS, queue)
    make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)
    log_path = tmp_path / "server.log"
    with (
        open(log_path, "wb") as log,
        running_server(
            str(settings.MEDIA_ROOT),
            log=log,
            CACHE_URL=f"redis://127.0.0.1:{private_redis.port}/3",
            GRADEQUEUE_READY_CACHE_SECONDS="0",
            CACHE_RETRY_SECONDS="0.5",
            WEB_WORKERS="1",  # one process (eight threads): its log says what one process says
        ) as (base_url, _process),
    ):
        lms = XQueueClient(base_url, "lms", LMS_PASSWORD)
        grader = XQueueClient(base_url, "grader", GRADER_PASSWORD)

        def cycle(student: int) -> None:
            header = {
                "lms_callback_url": f"http://127.0.0.1:9/courses/c/xqueue/{student}/p/score_update",
                "lms_key": f"key-{student}",
                "queue_name": "served",
            }
            assert lms.submit(header, lms_body()) == {"return_code": 0, "content": "1"}
            pulled = grader.get_submission("served")
            assert pulled["return_code"] == 0, pulled
            reply = grader.put_result(json.loads(pulled["content"])["xqueue_header"], grade())
            assert reply == {"return_code": 0, "content": ""}
            assert grader.get_queuelen("served") == {"return_code": 0, "content": 0}

        cycle(0)
        assert lms.logins == 1 and grader.logins == 1
        anonymous = requests_ready(base_url)
        assert anonymous["degraded"] == [], anonymous

        private_redis.stop()
        for student in range(1, 7):  # with the sessions made before
            cycle(student)
        # New logins work (the credential cache and the login throttle cannot be reached), wrong ones fail.
        for _ in range(4):
            fresh = XQueueClient(base_url, "grader", GRADER_PASSWORD)
            assert fresh.login() == {"return_code": 0, "content": "Logged in"}
            assert fresh.get_queuelen("served") == {"return_code": 0, "content": 0}
            wrong = XQueueClient(base_url, "grader", "not-the-password")
            assert wrong.login() == {"return_code": 1, "content": "Incorrect login credentials"}
        down = requests_ready(base_url)
        assert down["ready"] is True and down["failing"] == [] and down["degraded"] == ["cache"], down
        assert down["checks"]["cache"]["detail"] == "degraded"  # anonymous: no error text

        private_redis.start()
        deadline = time.monotonic() + 20
        while requests_ready(base_url)["degraded"]:
            assert time.monotonic() < deadline, "the cache was still reported degraded after it came back"
            time.sleep(0.2)
        cycle(7)

    log = log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    lines = log.splitlines()
    down_lines = [line for line in lines if "cache (Redis) unavailable" in line]
    back_lines = [line for line in lines if "cache (Redis) available again" in line]
    # One line when the outage began and one when it ended, not one per call (dozens here).
    assert len(down_lines) == 1, down_lines
    assert len(back_lines) == 1, back_lines
    assert "calls failed or skipped meanwhile" in back_lines[0]


def requests_ready(base_url: str) -> dict[str, Any]:
    import requests

    reply = requests.get(f"{base_url}/xqueue/ready/", timeout=10)
    body: dict[str, Any] = reply.json()
    return body


@pytest.mark.django_db
def test_a_session_logged_out_while_the_cache_was_down_is_not_served_from_it_afterwards(
    settings: Any, private_redis: PrivateRedis, grader_user: Any
) -> None:
    proxy = TcpProxy("127.0.0.1", private_redis.port)
    use_cache(settings, proxy.port, RETRY_SECONDS=0.0)
    settings.SESSION_ENGINE = "grading.sessions"
    raw = redis.Redis(port=private_redis.port, db=3)
    try:
        grader = Client()
        assert (
            json.loads(grader.post("/xqueue/login/", {"username": "grader", "password": GRADER_PASSWORD}).content)[
                "content"
            ]
            == "Logged in"
        )
        session_keys = raw.keys("*django.contrib.sessions.cached_db*")
        assert len(session_keys) == 1  # the session is in Redis as well as in the database

        proxy.cut()
        assert json.loads(grader.post("/xqueue/logout/").content) == {"return_code": 0, "content": "Goodbye"}
        assert raw.exists(session_keys[0])  # the logout could not delete Redis's copy
        assert rediscache.degraded()

        proxy.restore()
        cache.get("anything")  # the first call that reaches Redis deletes what was written meanwhile
        assert not rediscache.degraded()
        assert not raw.exists(session_keys[0])
        replay = grader.get("/xqueue/get_queuelen/", {"queue_name": "test-123"})
        assert replay.status_code == 302  # the old cookie is logged out everywhere
    finally:
        caches["default"].close()
        proxy.stop()


@pytest.mark.django_db
def test_a_hung_redis_costs_one_timeout_then_calls_skip_it_for_a_while(settings: Any) -> None:
    hung = SilentListener()
    use_cache(settings, hung.port, RETRY_SECONDS=60.0, SOCKET_CONNECT_TIMEOUT=0.2, SOCKET_TIMEOUT=0.2)
    try:
        for i in range(20):
            assert cache.get(f"k{i}", "missing") == "missing"
            assert cache.add(f"k{i}", 1) is False
            with pytest.raises(ValueError):
                cache.incr(f"k{i}")
        assert hung.connections == 1  # one call waited for its timeout; the other 59 did not try
        assert rediscache.CACHE.state()["calls"] == 60
    finally:
        caches["default"].close()
        hung.stop()


@pytest.mark.django_db
def test_an_unreachable_cache_is_logged_once_then_once_more_when_it_answers(
    settings: Any, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy("127.0.0.1", private_redis.port)
    use_cache(settings, proxy.port, RETRY_SECONDS=0.0)
    try:
        cache.set("k", "v")
        proxy.cut()
        with caplog.at_level("WARNING", logger="grading.cache"):
            for _ in range(25):
                assert cache.get("k") is None
            proxy.restore()
            assert cache.get("k") == "v"
            assert cache.get("k") == "v"
        messages = [r.getMessage() for r in caplog.records if r.name == "grading.cache"]
        assert len(messages) == 2, messages
        assert messages[0].startswith("cache (Redis) unavailable: ConnectionError")
        assert "25 calls failed or skipped meanwhile" in messages[1]
        assert all(r.exc_info is None for r in caplog.records)
    finally:
        caches["default"].close()
        proxy.stop()
