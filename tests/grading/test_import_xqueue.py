"""manage.py import_xqueue against a real xqueue table on MariaDB/MySQL (tests/xqueuedb.py)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from grading import grades, lifecycle
from grading.management.commands.import_xqueue import Skip, parse_row
from grading.models import Queue, Role, Status, Submission, SubmissionEvent, XqueueImport
from tests.conftest import make_account, submit
from tests.xqclient import grade
from tests.xqueuedb import XqueueDB, xqueue_database

pytestmark = pytest.mark.django_db

CB = "http://127.0.0.1:9/courses/course-v1:X+Y+Z/xqueue/{}/block-v1:X+Y+Z+type@problem+block@p1/score_update"
HEADER_ROW = "QUEUE       WAITING  FOR DELIVERY  ALREADY IMPORTED  SUPERSEDED  SKIPPED"


@pytest.fixture
def xq() -> Iterator[XqueueDB]:
    with xqueue_database() as db:
        yield db


@pytest.fixture
def queues(db: Any) -> dict[str, Queue]:
    return {name: Queue.objects.create(name=name) for name in ("python-101", "java-201")}


def run(xq: XqueueDB, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_xqueue", "--source", xq.url, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def summary(out: str) -> list[str]:
    """The summary's lines, from its column titles on (their width depends on the longest queue name)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("QUEUE "))
    return lines[start:]


def table(out: str) -> list[list[str]]:
    """The summary's rows below the titles, cell by cell."""
    return [re.split(r" {2,}", line.strip()) for line in summary(out)[1:]]


def test_unfinished_rows_are_imported_waiting_or_for_delivery_and_finished_rows_are_not(
    xq: XqueueDB, queues: dict[str, Queue]
) -> None:
    reply = grade(True, 1.0)
    waiting = xq.insert(callback_url=CB.format(1), arrival_time=datetime(2026, 11, 30, 8, 0, 0))
    pulled = xq.insert(
        callback_url=CB.format(2), arrival_time=datetime(2026, 11, 30, 8, 1, 0), pull_time=datetime(2026, 11, 30, 8, 2)
    )
    graded = xq.insert(
        callback_url=CB.format(3),
        lms_key="key-3",
        arrival_time=datetime(2026, 11, 30, 8, 3, 0),
        pull_time=datetime(2026, 11, 30, 8, 4),
        return_time=datetime(2026, 11, 30, 8, 5, 30),
        grader_reply=reply,
        num_failures=2,
    )
    xq.insert(callback_url=CB.format(4), retired=True)  # superseded or given up by xqueue
    xq.insert(callback_url=CB.format(5), grader_reply=reply, lms_ack=True, retired=True)  # delivered
    xq.insert(callback_url=CB.format(6), grader_reply=reply, lms_ack=True)  # acknowledged, not yet retired
    java = xq.insert(queue_name="java-201", callback_url=CB.format(7))

    out, err = run(xq)

    assert err == ""
    assert summary(out) == [
        HEADER_ROW,
        "java-201          1             0                 0           0        0",
        "python-101        2             1                 0           0        0",
        "TOTAL             3             1                 0           0        0",
    ]
    imported = dict(XqueueImport.objects.values_list("xqueue_id", "submission_id"))
    assert sorted(imported) == sorted([waiting, pulled, graded, java])
    rows = {xqueue_id: Submission.objects.get(pk=pk) for xqueue_id, pk in imported.items()}
    assert [rows[i].status for i in (waiting, pulled, graded, java)] == ["queued", "queued", "returned", "queued"]
    assert rows[graded].grader_reply == reply
    assert rows[graded].returned_at == datetime(2026, 11, 30, 8, 5, 30, tzinfo=UTC)
    assert rows[waiting].created_at == datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
    assert rows[graded].lms_header == json.dumps(
        {"lms_callback_url": CB.format(3), "lms_key": "key-3", "queue_name": "python-101"}
    )
    assert rows[graded].lms_callback_url == CB.format(3)  # whole, though xqueue's column keeps 128 characters
    assert rows[graded].lms_key == "key-3"
    assert rows[waiting].body == '{"student_response": "42", "grader_payload": "", "student_info": "{}"}'
    assert rows[java].queue.name == "java-201"
    # xqueue's order is kept: the waiting ones are handed out oldest first.
    assert rows[waiting].pk < rows[pulled].pk < rows[graded].pk < rows[java].pk
    event = SubmissionEvent.objects.get(submission=rows[graded])
    assert (event.from_status, event.to_status, event.reason, event.actor) == (
        "",
        "returned",
        "imported",
        "system:import_xqueue",
    )
    assert event.details == {"queue": "python-101", "origin": "xqueue", "xqueue_id": graded}


def test_a_graded_but_undelivered_row_is_delivered_not_handed_to_a_grader_again(
    xq: XqueueDB, queues: dict[str, Queue]
) -> None:
    grader = make_account("grader", "pw", Role.GRADER, queues["python-101"])
    waiting = xq.insert(callback_url=CB.format(1))
    graded = xq.insert(
        callback_url=CB.format(2), grader_reply=grade(False, 0.25), return_time=datetime(2026, 11, 30, 9)
    )
    run(xq)
    by_xqueue = dict(XqueueImport.objects.values_list("xqueue_id", "submission_id"))

    lease = lifecycle.lease_next(queues["python-101"], grader)
    assert lease is not None and lease.submission_id == by_xqueue[waiting]
    assert lifecycle.lease_next(queues["python-101"], grader) is None
    claim = lifecycle.score_and_claim(by_xqueue[graded])
    assert claim is not None
    assert claim.lms_body == grade(False, 0.25)
    assert claim.callback_url == CB.format(2)
    assert json.loads(claim.lms_header)["lms_callback_url"] == CB.format(2)
    assert list(Submission.objects.get(pk=by_xqueue[graded]).events.values_list("to_status", flat=True)) == [
        "returned",
        "graded",
    ]


def test_a_reply_the_lms_cannot_use_fails_with_the_notice_instead(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    xq.insert(callback_url=CB.format(1), grader_reply="this is not a grade")
    run(xq)
    submission = Submission.objects.get()
    assert lifecycle.score_and_claim(submission.pk) is None  # no grade to claim a delivery for: it failed
    submission.refresh_from_db()
    assert submission.status == Status.FAILED
    assert submission.lms_body == grades.not_graded_notice()


def test_a_second_run_imports_nothing_twice(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    xq.insert(callback_url=CB.format(1))
    xq.insert(callback_url=CB.format(2), grader_reply=grade())
    run(xq)
    xq.insert(callback_url=CB.format(3))  # arrived at xqueue after the first run
    out, _ = run(xq)
    assert table(out) == [
        ["python-101", "1", "0", "2", "0", "0"],
        ["TOTAL", "1", "0", "2", "0", "0"],
    ]
    assert Submission.objects.count() == 3
    assert SubmissionEvent.objects.count() == 3


def test_the_same_xqueue_id_from_another_origin_is_another_submission(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    xq.insert(callback_url=CB.format(1))
    run(xq)
    out, _ = run(xq, "--origin", "xqueue-eu")
    # Same callback, still unfinished in gradequeue: the second origin's row is older news.
    assert table(out)[0] == ["python-101", "0", "0", "0", "1", "0"]
    assert XqueueImport.objects.count() == 1


def test_dry_run_counts_and_changes_nothing(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    xq.insert(callback_url=CB.format(1))
    xq.insert(callback_url=CB.format(2), grader_reply=grade())
    xq.insert(queue_name="new-queue", callback_url=CB.format(3))
    xq.insert(header="not json", callback_url=CB.format(4))

    out, err = run(xq, "--dry-run")
    assert out.splitlines()[0] == f"Would import from mysql://127.0.0.1:3306/{xq.name}:"
    assert table(out) == [
        ["new-queue", "0", "0", "0", "0", "1"],
        ["python-101", "1", "1", "0", "0", "1"],
        ["TOTAL", "1", "1", "0", "0", "2"],
    ]
    assert "queue 'new-queue' does not exist (create it, or give --create-queues)" in err
    out, _ = run(xq, "--dry-run", "--create-queues")
    assert table(out)[0] == ["new-queue", "1", "0", "0", "0", "0"]
    assert Submission.objects.count() == 0
    assert not Queue.objects.filter(name="new-queue").exists()
    assert XqueueImport.objects.count() == 0


def test_queue_option_limits_the_import_to_those_queues(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    xq.insert(callback_url=CB.format(1))
    xq.insert(queue_name="java-201", callback_url=CB.format(2))
    xq.insert(queue_name="other", callback_url=CB.format(3))
    out, err = run(xq, "--queue", "java-201")
    assert table(out) == [
        ["java-201", "1", "0", "0", "0", "0"],
        ["TOTAL", "1", "0", "0", "0", "0"],
    ]
    assert err == ""
    assert list(Submission.objects.values_list("queue__name", flat=True)) == ["java-201"]


def test_missing_queues_are_created_only_with_create_queues(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    xq.insert(queue_name="new-queue", callback_url=CB.format(1))
    out, err = run(xq)
    assert table(out)[0] == ["new-queue", "0", "0", "0", "0", "1"]
    assert "xqueue #1 (new-queue): queue 'new-queue' does not exist (create it, or give --create-queues)" in err
    assert not Queue.objects.filter(name="new-queue").exists()

    out, err = run(xq, "--create-queues")
    assert "Created queue new-queue (pull mode)" in out
    assert table(out)[0] == ["new-queue", "1", "0", "0", "0", "0"]
    assert Queue.objects.get(name="new-queue").mode == "pull"
    assert Submission.objects.get().queue.name == "new-queue"


def test_hostile_rows_are_reported_and_skipped_and_the_rows_behind_them_are_imported(
    xq: XqueueDB, queues: dict[str, Queue]
) -> None:
    ok = {"lms_callback_url": CB.format(1), "lms_key": "k", "queue_name": "python-101"}
    ids = {
        "not json": xq.insert(header="{not json"),
        "deep": xq.insert(header="[" * 1024),
        "array": xq.insert(header="[1, 2]"),
        "no key": xq.insert(header={"lms_callback_url": CB.format(1), "queue_name": "python-101"}),
        "other queue": xq.insert(header={**ok, "queue_name": "java-201"}),
        "nul": xq.insert(header=ok, body="print(1)\x00"),
        "escaped nul": xq.insert(header={**ok, "lms_key": "k\x00"}),
        "escaped surrogate": xq.insert(header={**ok, "extra": {"deep": ["\udc00"]}}),
        "nul queue": xq.insert(queue_name="python\x00101", header={**ok, "queue_name": "python\x00101"}),
        "empty queue": xq.insert(queue_name="", header={**ok, "queue_name": ""}),
        "evil host": xq.insert(header={**ok, "lms_callback_url": "http://evil.example.org/cb"}),
        "bad files": xq.insert(header=ok, urls="{oops"),
        "file list": xq.insert(header=ok, urls='{"a.py": 5}'),
        "no scheme": xq.insert(header=ok, urls={"a.py": "media/python-101/abc"}),
        "unknown queue": xq.insert(queue_name="nope", header={**ok, "queue_name": "nope"}),
        "big number": xq.insert(header=ok, body="1" * 5000, grader_reply="9" * 5000),
    }
    good = xq.insert(callback_url=CB.format(2))

    out, err = run(xq)

    assert err.splitlines() == [
        f"skipped xqueue #{ids['not json']} (python-101): xqueue_header is not JSON",
        f"skipped xqueue #{ids['deep']} (python-101): xqueue_header is not JSON",
        f"skipped xqueue #{ids['array']} (python-101): xqueue_header is not a JSON object",
        f"skipped xqueue #{ids['no key']} (python-101): xqueue_header lacks lms_callback_url, lms_key or queue_name",
        f"skipped xqueue #{ids['other queue']} (python-101): xqueue_header names queue 'java-201', the row "
        "'python-101'",
        f"skipped xqueue #{ids['nul']} (python-101): xqueue_body contains a NUL character (U+0000)",
        f"skipped xqueue #{ids['escaped nul']} (python-101): 'xqueue_header' key 'lms_key' contains a NUL character "
        "(U+0000), which is not accepted",
        f"skipped xqueue #{ids['escaped surrogate']} (python-101): 'xqueue_header' key 'extra' contains a lone "
        "surrogate (U+DC00), which is not accepted",
        f"skipped xqueue #{ids['nul queue']} ((invalid queue name)): queue_name contains a NUL character (U+0000)",
        f"skipped xqueue #{ids['empty queue']} ((invalid queue name)): queue_name is empty",
        f"skipped xqueue #{ids['evil host']} (python-101): Callback URL not allowed: host 'evil.example.org' is not "
        "on this server's callback allow-list (GRADEQUEUE_CALLBACK_HOSTS)",
        f"skipped xqueue #{ids['bad files']} (python-101): s3_urls is not JSON",
        f"skipped xqueue #{ids['file list']} (python-101): s3_urls is not a JSON object of names to strings",
        f"skipped xqueue #{ids['no scheme']} (python-101): file URL 'media/python-101/abc' is not http(s); give "
        "--files-root to read xqueue's storage",
        f"skipped xqueue #{ids['unknown queue']} (nope): queue 'nope' does not exist (create it, or give "
        "--create-queues)",
    ]
    assert table(out) == [
        ["(invalid queue name)", "0", "0", "0", "0", "2"],
        ["nope", "0", "0", "0", "0", "1"],
        ["python-101", "1", "1", "0", "0", "12"],
        ["TOTAL", "1", "1", "0", "0", "15"],
    ]
    # An opaque body with a 5 000-digit number is the LMS's business: kept verbatim, the reply scored later.
    big = Submission.objects.get(xqueue_import__xqueue_id=ids["big number"])
    assert big.body == "1" * 5000 and big.status == Status.RETURNED
    assert Submission.objects.get(xqueue_import__xqueue_id=good).status == Status.QUEUED
    assert Submission.objects.count() == 2


def test_undecodable_text_is_refused_by_the_row_check() -> None:
    # PyMySQL hands text over as bytes (use_unicode=False); a lone surrogate's UTF-8 form is not valid UTF-8.
    header = json.dumps({"lms_callback_url": CB.format(1), "lms_key": "k", "queue_name": "q"}).encode()
    row = (1, b"q", header, b"answer \xed\xa0\x80", b"{}", b"{}", None, None, b"")
    with pytest.raises(Skip, match=r"^xqueue_body is not valid UTF-8$"):
        parse_row(row)


def test_a_newer_gradequeue_submission_for_the_same_problem_wins(xq: XqueueDB, queues: dict[str, Queue]) -> None:
    lms = make_account("lms", "pw", Role.LMS, queues["python-101"])
    newer = submit(queues["python-101"], lms, CB.format(1))
    xq.insert(callback_url=CB.format(1))
    out, _ = run(xq, "--dry-run")
    assert table(out)[0] == ["python-101", "0", "0", "0", "1", "0"]
    out, err = run(xq)
    assert table(out)[0] == ["python-101", "0", "0", "0", "1", "0"]
    assert err == "skipped xqueue #1 (python-101): a newer answer to the same problem is already in gradequeue\n"
    assert list(Submission.objects.values_list("pk", "status")) == [(newer.pk, "queued")]


# --- Files ------------------------------------------------------------------------------------------------


def test_files_are_copied_from_xqueues_storage_folder(xq: XqueueDB, queues: dict[str, Queue], tmp_path: Path) -> None:
    root = tmp_path / "xqueue-media"
    (root / "python-101").mkdir(parents=True)
    (root / "python-101" / "5f0c").write_bytes(b"print(42)\n")
    (root / "python-101" / "77aa").write_bytes(b"\x00\x01binary")
    keys = {"answer.py": "5f0c", "data.bin": "77aa"}
    urls = {"answer.py": "media/python-101/5f0c", "data.bin": "media/python-101/77aa"}
    xq.insert(callback_url=CB.format(1), keys=keys, urls=urls)
    # xqueue's form for many files: the lists themselves are a stored object.
    (root / "python-101" / "list1").write_text(json.dumps({"files": {"c.txt": "media/x"}, "keys": {"c.txt": "c1"}}))
    (root / "python-101" / "c1").write_bytes(b"see")
    xq.insert(callback_url=CB.format(2), keys={"KEY_FOR_EXTERNAL_DICTS": "list1"}, urls={"URL_FOR_EXTERNAL_DICTS": "x"})
    xq.insert(callback_url=CB.format(3), keys={"passwd": "../../../../etc/passwd"}, urls={"passwd": "x"})
    xq.insert(callback_url=CB.format(4), keys={"gone.py": "0000"}, urls={"gone.py": "x"})

    out, err = run(xq, "--files-root", str(root))

    first, second = Submission.objects.order_by("pk")
    assert sorted(first.files) == ["answer.py", "data.bin"]
    assert default_storage.open(first.files["answer.py"]).read() == b"print(42)\n"
    assert default_storage.open(first.files["data.bin"]).read() == b"\x00\x01binary"
    assert first.files["answer.py"].startswith("submissions/")
    assert list(second.files) == ["c.txt"]
    assert default_storage.open(second.files["c.txt"]).read() == b"see"
    assert err.splitlines() == [
        "skipped xqueue #3 (python-101): file key '../../../../etc/passwd' points outside --files-root",
        "skipped xqueue #4 (python-101): file python-101/0000 cannot be read under --files-root: "
        "No such file or directory",
    ]
    assert table(out)[0] == ["python-101", "2", "0", "0", "0", "2"]


class _FileServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = served = files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = served.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_files_are_downloaded_from_the_urls_xqueue_recorded(
    xq: XqueueDB, queues: dict[str, Queue], settings: Any
) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "MAX_FILE_BYTES": 1000}
    server = _FileServer({"/s3/a.py": b"print('a')", "/s3/big": b"x" * 1001})
    try:
        server.files["/s3/list"] = json.dumps({"files": {"b.py": f"{server.base}/s3/a.py"}, "keys": {}}).encode()
        xq.insert(callback_url=CB.format(1), keys={"a.py": "k"}, urls={"a.py": f"{server.base}/s3/a.py"})
        xq.insert(callback_url=CB.format(2), urls={"gone.py": f"{server.base}/s3/gone"})
        xq.insert(callback_url=CB.format(3), urls={"big": f"{server.base}/s3/big"})
        xq.insert(callback_url=CB.format(4), urls={"URL_FOR_EXTERNAL_DICTS": f"{server.base}/s3/list"})
        out, err = run(xq)
    finally:
        server.stop()
    first, listed = Submission.objects.order_by("pk")
    assert default_storage.open(first.files["a.py"]).read() == b"print('a')"
    assert default_storage.open(listed.files["b.py"]).read() == b"print('a')"
    assert err.splitlines() == [
        f"skipped xqueue #2 (python-101): file URL answered HTTP 404: {server.base}/s3/gone",
        f"skipped xqueue #3 (python-101): file at {server.base}/s3/big is larger than 1000 bytes",
    ]
    assert table(out)[0] == ["python-101", "2", "0", "0", "0", "2"]
    # Nothing is left behind for the skipped rows.
    stored = sorted(p.name for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file())
    assert stored == ["0-a.py", "0-b.py"]


# --- The command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("postgres://x@h/db", "--source must be a mysql:// URL"),
        ("mysql://root@127.0.0.1:3306", "--source must name a host and a database"),
        ("mysql://root@127.0.0.1:99999/x", "--source has an invalid port"),
        ("mysql://root@127.0.0.1:1/x", "Cannot connect to xqueue's database"),
    ],
)
def test_a_bad_source_is_a_clear_error(db: Any, source: str, message: str) -> None:
    with pytest.raises(CommandError, match="^" + re.escape(message)):
        call_command("import_xqueue", "--source", source, stdout=StringIO(), stderr=StringIO())


def test_the_password_can_come_from_the_environment(
    xq: XqueueDB, queues: dict[str, Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    xq.insert(callback_url=CB.format(1))
    url = xq.url.replace("mysql://root@", "mysql://root:wrong@")
    with pytest.raises(CommandError, match=r"^Cannot connect"):
        call_command("import_xqueue", "--source", url, stdout=StringIO(), stderr=StringIO())
    monkeypatch.setenv("XQ_PW", "")
    call_command("import_xqueue", "--source", url, "--source-password-env", "XQ_PW", stdout=StringIO())
    assert Submission.objects.count() == 1
