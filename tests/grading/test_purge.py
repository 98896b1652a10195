"""purge_submissions: old finished submissions go, with their events and their stored files."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from grading import files, lifecycle
from grading.models import Status, Submission, SubmissionEvent
from tests.conftest import lms_header, stored_files
from tests.xqclient import grade

CALLBACK = "http://127.0.0.1:9/courses/c/xqueue/{}/p/score_update"


def new(queue: Any, user: Any, student: int) -> int:
    stored = files.store({f"answer-{student}.py": SimpleUploadedFile("a.py", f"print({student})\n".encode())})
    url = CALLBACK.format(student)
    submission, _ = lifecycle.submit(
        lifecycle.NewSubmission(
            queue=queue, lms_header=lms_header(url), lms_callback_url=url, lms_key="k", body="{}", files=stored
        ),
        user,
    )
    return submission.pk


def graded_and_delivered(queue: Any, lms_user: Any, grader_user: Any, student: int, lms_status: int) -> int:
    pk = new(queue, lms_user, student)
    lease = lifecycle.lease_next(queue, grader_user)
    assert lease is not None and lease.submission_id == pk
    lifecycle.accept_result(pk, lease.key, grade(), grader_user, [queue.pk])
    claim = lifecycle.score_and_claim(pk)
    assert claim is not None
    lifecycle.record_delivery(claim, http_status=lms_status, error="", duration_ms=1)
    return pk


@pytest.fixture
def population(queue: Any, lms_user: Any, grader_user: Any, request: Any) -> dict[str, int]:
    """One submission in each interesting state, all finished 30 days ago, each with a stored file."""
    if "storage_kind" in request.fixturenames:
        request.getfixturevalue("storage_kind")  # choose the storage before anything is stored
    with time_machine.travel(timezone.now() - timedelta(days=30)):
        ids = {
            "delivered": graded_and_delivered(queue, lms_user, grader_user, 1, 200),
            "dead_letter": graded_and_delivered(queue, lms_user, grader_user, 2, 400),
        }
        ids["superseded"] = new(queue, lms_user, 3)
        ids["superseding"] = new(queue, lms_user, 3)  # still queued: replaces the one above
        ids["cancelled"] = new(queue, lms_user, 4)
        lifecycle.cancel(ids["cancelled"], actor="test")
        ids["pulled"] = new(queue, lms_user, 5)
    statuses = dict(Submission.objects.values_list("pk", "status"))
    assert {name: statuses[pk] for name, pk in ids.items()} == {
        "delivered": Status.DELIVERED,
        "dead_letter": Status.DEAD_LETTER,
        "superseded": Status.SUPERSEDED,
        "superseding": Status.QUEUED,
        "cancelled": Status.CANCELLED,
        "pulled": Status.QUEUED,
    }
    assert len(stored_files()) == 6
    return ids


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_submissions", *args, stdout=out)
    return out.getvalue()


def remaining(ids: dict[str, int]) -> set[str]:
    left = set(Submission.objects.values_list("pk", flat=True))
    return {name for name, pk in ids.items() if pk in left}


def files_of(ids: dict[str, int], *names: str) -> list[str]:
    rows = dict(Submission.objects.filter(pk__in=[ids[n] for n in names]).values_list("pk", "files"))
    return sorted(path for n in names for path in rows[ids[n]].values())


def test_finished_submissions_are_deleted_with_their_events_and_files(
    population: dict[str, int], storage_kind: str
) -> None:
    kept_files = files_of(population, "dead_letter", "superseding", "pulled")
    gone_files = files_of(population, "delivered", "superseded", "cancelled")
    assert purge("--older-than-days", "7") == "Deleted 3 submission(s) and 3 stored file(s).\n"
    assert remaining(population) == {"dead_letter", "superseding", "pulled"}
    assert stored_files() == kept_files
    assert not any(default_storage.exists(path) for path in gone_files)
    assert not SubmissionEvent.objects.filter(
        submission_id__in=[population[n] for n in ("delivered", "superseded", "cancelled")]
    ).exists()


def test_empty_submission_folders_are_removed_on_local_storage(population: dict[str, int], settings: Any) -> None:
    from pathlib import Path

    purge("--older-than-days", "7", "--include-dead-letter")
    folders = [p for p in (Path(settings.MEDIA_ROOT) / "submissions").iterdir()]
    assert len(folders) == 2  # the two unfinished submissions' folders


def test_dead_letters_are_purged_only_when_asked(population: dict[str, int]) -> None:
    purge("--older-than-days", "7")
    assert "dead_letter" in remaining(population)
    assert purge("--older-than-days", "7", "--include-dead-letter") == (
        "Deleted 1 submission(s) and 1 stored file(s).\n"
    )
    assert remaining(population) == {"superseding", "pulled"}


def test_recent_submissions_are_kept(population: dict[str, int]) -> None:
    assert purge("--older-than-days", "31") == "Deleted 0 submission(s) and 0 stored file(s).\n"
    assert len(remaining(population)) == 6
    assert len(stored_files()) == 6


def test_a_dry_run_counts_and_deletes_nothing(population: dict[str, int]) -> None:
    assert purge("--older-than-days", "7", "--dry-run") == "Would delete 3 submission(s) and 3 stored file(s).\n"
    assert len(remaining(population)) == 6
    assert len(stored_files()) == 6


def test_small_batches_delete_everything_eligible(population: dict[str, int]) -> None:
    assert purge("--older-than-days", "7", "--batch", "1") == "Deleted 3 submission(s) and 3 stored file(s).\n"
    assert remaining(population) == {"dead_letter", "superseding", "pulled"}


def test_a_requeued_submission_is_no_longer_purged(population: dict[str, int]) -> None:
    assert lifecycle.requeue(population["delivered"], actor="test")
    purge("--older-than-days", "7")
    assert "delivered" in remaining(population)


def test_a_file_that_cannot_be_deleted_keeps_its_row(population: dict[str, int], monkeypatch: Any) -> None:
    stuck = files_of(population, "delivered")[0]
    real_delete = default_storage.delete

    def delete(name: str) -> None:
        if name == stuck:
            raise OSError("permission denied")
        real_delete(name)

    monkeypatch.setattr(default_storage, "delete", delete)
    with pytest.raises(CommandError, match=f"could not be deleted .*: {population['delivered']}$"):
        purge("--older-than-days", "7")
    assert remaining(population) == {"delivered", "dead_letter", "superseding", "pulled"}


@pytest.mark.parametrize("args", [["--older-than-days", "-1"], ["--older-than-days", "7", "--batch", "0"]])
def test_bad_options_are_refused(db: Any, args: list[str]) -> None:
    with pytest.raises(CommandError):
        purge(*args)
