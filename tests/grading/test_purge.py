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


# --- The set-based purge: what it must never do -------------------------------------------------------------

# Databases where a purge passes over a finished row another transaction holds. SQLite has no row locks: its
# IMMEDIATE transactions take the database's write lock, so the purge waits for the other writer instead.
ROW_LOCKING = {"postgresql": True, "mysql": True, "sqlite": False}


@pytest.fixture
def every_state(queue: Any, lms_user: Any, grader_user: Any) -> dict[str, int]:
    """One submission in each status, all of them last changed 30 days ago."""
    with time_machine.travel(timezone.now() - timedelta(days=30)):
        ids = {
            "delivered": graded_and_delivered(queue, lms_user, grader_user, 1, 200),
            "dead_letter": graded_and_delivered(queue, lms_user, grader_user, 2, 400),
        }
        ids["pulled"] = new(queue, lms_user, 3)
        assert lifecycle.lease_next(queue, grader_user).submission_id == ids["pulled"]  # type: ignore[union-attr]
        for name, student, reply in (("returned", 4, grade()), ("graded", 5, grade()), ("failed", 6, "not json")):
            ids[name] = new(queue, lms_user, student)
            lease = lifecycle.lease_next(queue, grader_user)
            assert lease is not None and lease.submission_id == ids[name]
            lifecycle.accept_result(ids[name], lease.key, reply, grader_user, [queue.pk])
        assert lifecycle.score_and_claim(ids["graded"]) is not None  # graded, its delivery not yet made
        assert lifecycle.score_and_claim(ids["failed"]) is None  # failed, its notice not yet delivered
        ids["superseded"] = new(queue, lms_user, 7)
        ids["queued"] = new(queue, lms_user, 7)
        ids["cancelled"] = new(queue, lms_user, 8)
        lifecycle.cancel(ids["cancelled"], actor="test")
    statuses = dict(Submission.objects.values_list("pk", "status"))
    assert {statuses[pk] for pk in ids.values()} == set(Status.values)
    assert {name: statuses[pk] for name, pk in ids.items()} == {name: name for name in ids}
    return ids


def events_of(ids: dict[str, int], *names: str) -> dict[str, int]:
    counts = {name: SubmissionEvent.objects.filter(submission_id=ids[name]).count() for name in names}
    return counts


def test_no_unfinished_submission_is_purged_however_old(every_state: dict[str, int]) -> None:
    live = ("queued", "pulled", "returned", "graded", "failed")
    events_before = events_of(every_state, *live)
    assert purge("--older-than-days", "7", "--include-dead-letter", "--batch", "1") == (
        "Deleted 4 submission(s) and 4 stored file(s).\n"
    )
    assert remaining(every_state) == set(live)
    assert events_of(every_state, *live) == events_before
    assert len(stored_files()) == 5


def test_no_event_or_import_record_outlives_its_submission(every_state: dict[str, int]) -> None:
    from grading.models import XqueueImport

    XqueueImport.objects.create(xqueue_id=41, submission_id=every_state["delivered"], imported_at=timezone.now())
    XqueueImport.objects.create(xqueue_id=42, submission_id=every_state["queued"], imported_at=timezone.now())
    assert purge("--older-than-days", "7", "--batch", "2") == "Deleted 3 submission(s) and 3 stored file(s).\n"
    kept = set(Submission.objects.values_list("pk", flat=True))
    assert set(SubmissionEvent.objects.values_list("submission_id", flat=True)) == kept
    assert list(XqueueImport.objects.values_list("xqueue_id", "submission_id")) == [(42, every_state["queued"])]


def test_a_kept_submission_forgets_the_purged_one_that_superseded_it(
    queue: Any, lms_user: Any, grader_user: Any, monkeypatch: Any
) -> None:
    with time_machine.travel(timezone.now() - timedelta(days=30)):
        older = new(queue, lms_user, 1)
        newer = graded_and_delivered(queue, lms_user, grader_user, 1, 200)
    assert Submission.objects.get(pk=older).superseded_by_id == newer
    stuck = files_of({"older": older}, "older")[0]
    real_delete = default_storage.delete

    def delete(name: str) -> None:
        if name == stuck:
            raise OSError("permission denied")
        real_delete(name)

    monkeypatch.setattr(default_storage, "delete", delete)
    with pytest.raises(CommandError, match=f"could not be deleted .*: {older}$"):
        purge("--older-than-days", "7")
    assert list(Submission.objects.values_list("pk", "status", "superseded_by_id")) == [
        (older, Status.SUPERSEDED, None)
    ]


def test_a_file_that_cannot_be_deleted_does_not_stop_the_batches_after_it(
    population: dict[str, int], monkeypatch: Any
) -> None:
    # The delivered submission is the oldest: with one row per batch, its failure comes first.
    assert min(population["delivered"], population["superseded"], population["cancelled"]) == population["delivered"]
    stuck = files_of(population, "delivered")[0]
    real_delete = default_storage.delete

    def delete(name: str) -> None:
        if name == stuck:
            raise OSError("permission denied")
        real_delete(name)

    monkeypatch.setattr(default_storage, "delete", delete)
    out = StringIO()
    with pytest.raises(CommandError, match=f"Kept 1 submission\\(s\\) .*: {population['delivered']}$"):
        call_command("purge_submissions", "--older-than-days", "7", "--batch", "1", stdout=out)
    assert out.getvalue() == "Deleted 2 submission(s) and 2 stored file(s).\n"
    assert remaining(population) == {"delivered", "dead_letter", "superseding", "pulled"}


def test_a_batch_deletes_with_set_based_statements_and_never_loads_a_submission_whole(
    population: dict[str, int],
) -> None:
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert purge("--older-than-days", "7") == "Deleted 3 submission(s) and 3 stored file(s).\n"
    statements = [q["sql"] for q in queries.captured_queries]
    whole_row = re.compile(r"""grading_submission["`]?\.["`]?(body|lms_header|grader_reply)\b""")
    assert [s for s in statements if whole_row.search(s)] == []
    deletes = sorted(re.match(r"""DELETE FROM ["`]?(\w+)""", s).group(1) for s in statements if s.startswith("DELETE"))  # type: ignore[union-attr]
    assert deletes == ["grading_submission", "grading_submissionevent", "grading_xqueueimport"]


def test_the_rate_limit_waits_between_batches_so_that_the_average_stays_under_it(
    population: dict[str, int], monkeypatch: Any
) -> None:
    from types import SimpleNamespace

    from grading import retention

    clock = [1000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        clock[0] += seconds

    monkeypatch.setattr(retention, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep))
    # Three purgeable submissions in batches of one, at most 0.5 a second: 2 s after each full batch (the
    # third is full too: only the next, empty one says that nothing is left).
    report = retention.purge(timedelta(days=7), batch=1, max_rate=0.5)
    assert (report.submissions, report.batches, waits) == (3, 3, [2.0, 2.0, 2.0])
    assert remaining(population) == {"dead_letter", "superseding", "pulled"}


def test_a_pause_is_taken_after_each_full_batch_and_not_after_the_last(
    population: dict[str, int], monkeypatch: Any
) -> None:
    from types import SimpleNamespace

    from grading import retention

    waits: list[float] = []
    monkeypatch.setattr(retention, "time", SimpleNamespace(monotonic=lambda: 0.0, sleep=waits.append))
    report = retention.purge(timedelta(days=7), batch=2, pause=0.25)
    assert (report.submissions, report.batches, waits) == (3, 2, [0.25])


@pytest.mark.parametrize(
    "args",
    [
        ["--older-than-days", "7", "--max-rate", "0"],
        ["--older-than-days", "7", "--max-rate", "nan"],
        ["--older-than-days", "7", "--pause", "-1"],
        ["--older-than-days", "7", "--pause", "inf"],
        ["--older-than-days", "7", "--pause", "nan"],
    ],
)
def test_bad_pacing_options_are_refused(db: Any, args: list[str]) -> None:
    with pytest.raises(CommandError):
        purge(*args)


def test_the_verbose_summary_counts_the_events_deleted_with_the_submissions(population: dict[str, int]) -> None:
    events = SubmissionEvent.objects.filter(
        submission_id__in=[population[n] for n in ("delivered", "superseded", "cancelled")]
    ).count()
    out = purge("--older-than-days", "7", "-v", "2").splitlines()
    assert out[0] == "Deleted 3 submission(s) and 3 stored file(s)."
    assert out[1].startswith(f"With them {events} event(s) and 0 import record(s); 1 batch(es) in ")


@pytest.mark.django_db(transaction=True)
def test_a_finished_row_another_transaction_holds_is_passed_over_not_waited_for(
    queue: Any, lms_user: Any, grader_user: Any
) -> None:
    import threading

    from django.db import close_old_connections, connection, transaction

    with time_machine.travel(timezone.now() - timedelta(days=30)):
        held = graded_and_delivered(queue, lms_user, grader_user, 1, 200)
        other = graded_and_delivered(queue, lms_user, grader_user, 2, 200)
    locked, finished = threading.Event(), threading.Event()
    held_when_done: list[bool] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                list(Submission.objects.select_for_update().filter(pk=held).values_list("pk"))
                locked.set()
                # Row-locking databases finish the purge while this is held; on SQLite the purge waits for it,
                # so this gives it up after a moment (the order is asserted, not the time).
                finished.wait(0.3 if connection.vendor == "sqlite" else 10)
                held_when_done.append(finished.is_set())
        finally:
            close_old_connections()
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(10)
    said = purge("--older-than-days", "7")
    finished.set()
    thread.join(15)
    if ROW_LOCKING[connection.vendor]:
        assert (said, held_when_done) == ("Deleted 1 submission(s) and 1 stored file(s).\n", [True])
        assert list(Submission.objects.values_list("pk", flat=True)) == [held]
        assert purge("--older-than-days", "7") == "Deleted 1 submission(s) and 1 stored file(s).\n"
    else:
        assert (said, held_when_done) == ("Deleted 2 submission(s) and 2 stored file(s).\n", [False])
    assert not Submission.objects.filter(pk__in=[held, other]).exists()
    assert not SubmissionEvent.objects.exists()
