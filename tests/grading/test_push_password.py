"""An HTTP grader's push password: encrypted at rest with a key from the environment, never shown in the
admin, migrated from plain text, and still sent to the grader."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from grading import lifecycle, push, secretbox
from grading.models import Queue, QueueMode, Status, Submission
from tests.conftest import submit
from tests.http_grader import FakeHTTPGrader
from tests.xqclient import lms_body

pytestmark = pytest.mark.django_db
PLAIN = "the grader's password: s3cret ü"


def stored(queue: Queue) -> str:
    return Queue.objects.values_list("push_password", flat=True).get(pk=queue.pk)


def opened_with(key_text: str, value: str) -> str:
    # Fernet under SHA-256 of the configured key text, written out here rather than taken from the code.
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_text.encode()).digest()))
    assert value.startswith("fernet:")
    return fernet.decrypt(value.removeprefix("fernet:").encode()).decode()


@pytest.fixture
def key(settings: Any) -> str:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ENCRYPTION_KEY": "key-from-the-environment-1"}
    return "key-from-the-environment-1"


def test_create_queue_stores_the_push_password_encrypted_with_the_configured_key(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADER_HTTP_PW", PLAIN)
    call_command(
        "create_queue", "py-http", mode="http", push_url="http://127.0.0.1:9/grade", push_password_env="GRADER_HTTP_PW"
    )
    value = stored(Queue.objects.get(name="py-http"))
    assert PLAIN not in value and "s3cret" not in value
    assert opened_with(key, value) == PLAIN


def test_a_password_assigned_in_clear_is_sealed_on_save_and_opens_again(key: str) -> None:
    queue = Queue.objects.create(name="q", mode=QueueMode.HTTP, push_url="http://127.0.0.1:9/", push_password=PLAIN)
    assert opened_with(key, stored(queue)) == PLAIN
    assert secretbox.open_sealed(stored(queue)) == PLAIN
    queue.refresh_from_db()
    queue.save()  # saving again does not seal twice
    assert opened_with(key, stored(queue)) == PLAIN


def test_keys_rotate_and_a_wrong_key_opens_nothing(settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ENCRYPTION_KEY": "old-key"}
    sealed = secretbox.seal(PLAIN)
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ENCRYPTION_KEY": "new-key, old-key"}
    assert secretbox.open_sealed(sealed) == PLAIN
    assert opened_with("new-key", secretbox.seal(PLAIN)) == PLAIN  # the first key seals
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ENCRYPTION_KEY": "new-key"}
    with pytest.raises(secretbox.CannotOpen):
        secretbox.open_sealed(sealed)


@pytest.fixture
def admin_client(db: Any) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.org", "ops-password-1"))
    return client


def form_data(queue: Queue, **changes: str) -> dict[str, str]:
    data = {
        "name": queue.name,
        "mode": queue.mode,
        "lease_seconds": "",
        "max_attempts": "",
        "max_in_flight": "",
        "push_url": queue.push_url,
        "push_username": queue.push_username,
        "new_push_password": "",
        "grants-TOTAL_FORMS": "0",
        "grants-INITIAL_FORMS": "0",
        "grants-MIN_NUM_FORMS": "0",
        "grants-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return data


def test_the_admin_never_shows_the_push_password_and_replaces_keeps_or_clears_it(
    key: str, admin_client: Client
) -> None:
    queue = Queue.objects.create(name="q", mode=QueueMode.HTTP, push_url="http://127.0.0.1:9/", push_password=PLAIN)
    url = f"/admin/grading/queue/{queue.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="new_push_password"' in page and 'type="password"' in page
    assert "s3cret" not in page and "fernet:" not in page and stored(queue).removeprefix("fernet:")[:20] not in page
    assert "a password is set" in page

    assert admin_client.post(url, form_data(queue)).status_code == 302  # empty: kept
    assert opened_with(key, stored(queue)) == PLAIN
    assert admin_client.post(url, form_data(queue, new_push_password="another one")).status_code == 302
    assert opened_with(key, stored(queue)) == "another one"
    assert "another one" not in admin_client.get(url).content.decode()
    assert admin_client.post(url, form_data(queue, clear_push_password="on")).status_code == 302
    assert stored(queue) == ""


def test_the_admin_add_form_stores_a_new_queues_push_password_encrypted(key: str, admin_client: Client) -> None:
    blank = Queue(name="new-q", mode=QueueMode.HTTP, push_url="http://127.0.0.1:9/")
    response = admin_client.post("/admin/grading/queue/add/", form_data(blank, new_push_password=PLAIN))
    assert response.status_code == 302
    assert opened_with(key, stored(Queue.objects.get(name="new-q"))) == PLAIN


@pytest.fixture
def http_grader() -> Iterator[FakeHTTPGrader]:
    grader = FakeHTTPGrader().start()
    yield grader
    grader.stop()


def test_the_grader_receives_the_decrypted_password(key: str, http_grader: FakeHTTPGrader, lms_user: Any) -> None:
    queue = Queue.objects.create(
        name="q", mode=QueueMode.HTTP, push_url=http_grader.url, push_username="gq", push_password="s3cret"
    )
    sub = submit(queue, lms_user, body=lms_body("42"))
    lease = lifecycle.lease_next(queue, None)
    assert lease is not None and lease.submission_id == sub.pk
    assert push.push_http(lease.submission_id, lease.key, 1)[0] is push.PushOutcome.GRADED
    assert [p.authorization for p in http_grader.pushes] == ["Basic " + base64.b64encode(b"gq:s3cret").decode()]


def test_a_push_password_no_key_opens_fails_the_submission_without_a_post(
    settings: Any, http_grader: FakeHTTPGrader, lms_user: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ENCRYPTION_KEY": "the-old-key"}
    queue = Queue.objects.create(
        name="q", mode=QueueMode.HTTP, push_url=http_grader.url, push_username="gq", push_password="s3cret"
    )
    sub = submit(queue, lms_user)
    lease = lifecycle.lease_next(queue, None)
    assert lease is not None
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "ENCRYPTION_KEY": "a-new-key"}
    assert push.push_http(lease.submission_id, lease.key, 1)[0] is push.PushOutcome.FAILED
    assert http_grader.pushes == []
    sub = Submission.objects.get(pk=sub.pk)
    assert sub.status == Status.FAILED
    assert sub.failure_reason == (
        "HTTP push: the push password cannot be decrypted with GRADEQUEUE_ENCRYPTION_KEY (was the key changed?)"
    )


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_plain_passwords_and_can_be_reversed(key: str) -> None:
    executor = MigrationExecutor(connection)
    before, after = [("grading", "0005_login_failure_counter")], [("grading", "0006_encrypt_push_password")]
    executor.migrate(before)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO grading_queue (name, mode, push_url, push_username, push_password, created_at) "
                "VALUES ('legacy', 'http', 'http://127.0.0.1:9/', 'gq', %s, CURRENT_TIMESTAMP), "
                "('no-password', 'pull', '', '', '', CURRENT_TIMESTAMP)",
                [PLAIN],
            )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        rows = dict(Queue.objects.values_list("name", "push_password"))
        assert rows["no-password"] == ""
        assert opened_with(key, rows["legacy"]) == PLAIN
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        with connection.cursor() as cursor:
            cursor.execute("SELECT push_password FROM grading_queue WHERE name = 'legacy'")
            assert cursor.fetchone() == (PLAIN,)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
        Queue.objects.all().delete()
