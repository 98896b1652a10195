from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from grading import lifecycle
from grading.models import Queue, QueueGrant, Role
from tests.lms import FakeLMS

LMS_PASSWORD = "lms-password-1"
GRADER_PASSWORD = "grader-password-1"


@pytest.fixture(scope="session", autouse=True)
def _on_the_expected_database() -> None:
    """CI names the database each run is meant for (GRADEQUEUE_TEST_EXPECT_DATABASE): a run that fell back to
    another (a lost DATABASE_URL) fails instead of passing on the wrong one."""
    from django.db import connection

    expected = os.environ.get("GRADEQUEUE_TEST_EXPECT_DATABASE", "")
    # The backend's vendor, not its module name: the embedded SQLite is grading.sqlite_backend.
    if expected and connection.vendor != expected:
        pytest.exit(
            f"GRADEQUEUE_TEST_EXPECT_DATABASE={expected}, but the tests would run on {connection.vendor}", returncode=3
        )


def make_account(username: str, password: str, role: str, *queues: Queue) -> Any:
    user = get_user_model().objects.create_user(username=username, password=password)
    for queue in queues:
        QueueGrant.objects.create(user=user, queue=queue, role=role)
    return user


@pytest.fixture
def queue(db: Any) -> Queue:
    return Queue.objects.create(name="test-123")


@pytest.fixture
def other_queue(db: Any) -> Queue:
    return Queue.objects.create(name="other-queue")


@pytest.fixture
def lms_user(queue: Queue) -> Any:
    return make_account("lms", LMS_PASSWORD, Role.LMS, queue)


@pytest.fixture
def grader_user(queue: Queue) -> Any:
    return make_account("grader", GRADER_PASSWORD, Role.GRADER, queue)


@pytest.fixture
def lms_client(lms_user: Any) -> Client:
    client = Client()
    client.force_login(lms_user)
    return client


@pytest.fixture
def grader_client(grader_user: Any) -> Client:
    client = Client()
    client.force_login(grader_user)
    return client


@pytest.fixture
def fake_lms() -> Iterator[FakeLMS]:
    lms = FakeLMS().start()
    yield lms
    lms.stop()


def lms_header(callback_url: str, queue_name: str = "test-123", lms_key: str = "key-1") -> str:
    return json.dumps({"lms_callback_url": callback_url, "lms_key": lms_key, "queue_name": queue_name})


def submit(
    queue: Queue,
    user: Any,
    callback_url: str = "http://127.0.0.1:9/cb",
    body: str = "{}",
    lms_key: str = "key-1",
) -> Any:
    submission, _ = lifecycle.submit(
        lifecycle.NewSubmission(
            queue=queue,
            lms_header=lms_header(callback_url, queue.name, lms_key),
            lms_callback_url=callback_url,
            lms_key=lms_key,
            body=body,
            files={},
        ),
        user,
    )
    return submission


@pytest.fixture(scope="module")
def celery_worker_app(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) on the configured broker, in this process, for one test module.

    The worker's threads use the test database; tests that need it are ``transaction=True`` so that what
    they commit is visible to it. Module scope lets other modules run workers of their own (subprocesses).
    """
    from celery import signals
    from celery.contrib.testing.worker import start_worker

    from celery_app import app

    with django_db_blocker.unblock():
        app.control.purge()
    # With AMQP heartbeats on, stopping the worker waits for the next heartbeat tick (~10 s).
    app.conf.broker_heartbeat = 0
    # The worker's threads keep their database connections, as in production; note their server processes,
    # so that they can be ended with the worker (else the test database could not be dropped at the end).
    backends: set[int] = set()

    def note_backend(**_: Any) -> None:
        import threading

        from django.db import connection

        if threading.current_thread() is threading.main_thread():
            return
        if connection.vendor == "postgresql" and connection.connection is not None:
            backends.add(connection.connection.info.backend_pid)

    signals.task_postrun.connect(note_backend, weak=False)
    try:
        with start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=15
        ):
            yield app
    finally:
        signals.task_postrun.disconnect(note_backend)
        if backends:
            with django_db_blocker.unblock():
                from django.db import connection

                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(backends)])


def fast_pipeline(settings: Any, **overrides: Any) -> None:
    """Shrink the delivery back-off, horizon and sweep grace so that pipeline tests run in seconds."""
    settings.GRADEQUEUE = {
        **settings.GRADEQUEUE,
        "DELIVERY_BACKOFF_BASE": 0.05,
        "DELIVERY_BACKOFF_CAP": 0.4,
        "DELIVERY_TIMEOUT": 2.0,
        "SWEEP_GRACE_SECONDS": 0.0,
        # A failed publish does not pause the next ones (in production it does, for a few seconds).
        "BROKER_RETRY_SECONDS": 0.0,
        **overrides,
    }


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    # PBKDF2's deliberate slowness buys nothing in tests; production keeps Django's default hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Files, limits and security ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_media_and_cache(settings: Any, tmp_path: Any) -> Iterator[None]:
    # Stored files go to a folder of the test's own; login-failure counters never leak between tests.
    from django.core.cache import cache

    from grading import health, outage, rediscache, scoring_signal

    def forget() -> None:
        # Nothing a test learnt about its dependencies (an outage, a kept readiness answer) reaches the next.
        scoring_signal.forget()
        health.forget()
        rediscache.reset()
        outage.database.reset()
        outage.broker.reset()

    settings.MEDIA_ROOT = str(tmp_path / "media")
    cache.clear()
    forget()
    yield
    cache.clear()
    forget()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """An S3-compatible server (moto's server mode) on a free loopback port, for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_server: str, settings: Any) -> Iterator[Any]:
    """Switch default_storage to S3 (django-storages) on a fresh bucket of the moto server.

    Yields the boto3 bucket, to look at what was stored.
    """
    import uuid

    import boto3

    name = f"gradequeue-test-{uuid.uuid4().hex[:12]}"
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.resource("s3", endpoint_url=moto_server, region_name="us-east-1", **credentials)
    bucket = s3.create_bucket(Bucket=name)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": name,
                "endpoint_url": moto_server,
                "region_name": "us-east-1",
                "access_key": "testing",
                "secret_key": "testing",
                "addressing_style": "path",
                "querystring_auth": True,
                "signature_version": "s3v4",
                "file_overwrite": False,
                "default_acl": None,
            },
        },
    }
    yield bucket
    bucket.objects.all().delete()
    bucket.delete()


@pytest.fixture(params=["local", "s3"])
def storage_kind(request: Any) -> str:
    """Run a test once on local storage and once on S3; ``stored_files()`` lists what either holds."""
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    return str(request.param)


def stored_files() -> list[str]:
    """Every file the current default storage holds under the submissions folder."""
    from django.core.files.storage import default_storage

    found: list[str] = []

    def walk(folder: str) -> None:
        if not default_storage.exists(folder) and not hasattr(default_storage, "bucket_name"):
            return
        dirs, names = default_storage.listdir(folder)
        found.extend(f"{folder}/{name}" for name in names)
        for sub in dirs:
            walk(f"{folder}/{sub}")

    walk("submissions")
    return sorted(found)


# --- Redis ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database for tests of what production keeps in its shared cache (the scoring signal).

    ``GRADEQUEUE_TEST_REDIS_URL`` names one (CI, and anyone running the suite against their services); it
    must answer, and must not be the broker's database, which the tests empty. Without it the tests start a
    private ``redis-server`` of their own on a free loopback port. Without either, these tests are skipped,
    saying so, because the embedded default (the in-process cache) has no shared signal to test; with
    ``GRADEQUEUE_REQUIRE_REDIS=1`` (CI) they fail instead.
    """
    import shutil
    import socket
    import subprocess
    import tempfile
    import time

    import redis
    from django.conf import settings

    from tests.processes import stop_group

    configured = os.environ.get("GRADEQUEUE_TEST_REDIS_URL", "")
    if configured:
        broker = settings.CELERY_BROKER_URL
        if broker.startswith(("redis://", "rediss://")) and broker.rstrip("/") == configured.rstrip("/"):
            pytest.fail(f"GRADEQUEUE_TEST_REDIS_URL={configured} is the broker's database: give the tests another")
        try:
            redis.Redis.from_url(configured, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            pytest.fail(f"GRADEQUEUE_TEST_REDIS_URL={configured} does not answer: {exc}")
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "needs Redis: install redis-server, or set GRADEQUEUE_TEST_REDIS_URL"
        if os.environ.get("GRADEQUEUE_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="gradequeue-test-redis-")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None:
                    pytest.fail(f"redis-server exited with {process.returncode} on port {port}")
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server did not answer on port {port}")
        yield url
    finally:
        client.close()
        stop_group(process, timeout=5)
        shutil.rmtree(folder, ignore_errors=True)
