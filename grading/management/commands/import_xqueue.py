"""manage.py import_xqueue: take over the unfinished work of an openedx/xqueue installation.

xqueue keeps every submission in one MySQL table, ``queue_submission``, with no status column: a row is
finished once it is ``retired`` or the LMS acknowledged its grade (``lms_ack``). Every other row is
imported, in xqueue's order, into the gradequeue queue of the same name:

- a row without a grader reply waits for a grader, as if just submitted;
- a row whose grader reply never reached the LMS is delivered, not graded again.

Files are copied into gradequeue's storage, from xqueue's storage folder (``--files-root``) or from the
URLs xqueue recorded. Each imported row is recorded by its xqueue id, so a second run imports nothing twice.
A row that cannot be imported (bad header, NUL character or lone surrogate, unknown queue, unreadable file)
is reported and skipped; the rows after it are imported all the same.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from grading import callbacks, files, headers, lifecycle, text
from grading.conf import setting
from grading.models import Queue, QueueMode, XqueueImport

# xqueue stores the file lists of a submission with many files in a storage object of their own, and puts
# these keys in the row instead (submission_queue/lms_interface.py).
EXTERNAL_KEYS = "KEY_FOR_EXTERNAL_DICTS"
EXTERNAL_URLS = "URL_FOR_EXTERNAL_DICTS"

COLUMNS = "id, queue_name, xqueue_header, xqueue_body, s3_keys, s3_urls, arrival_time, return_time, grader_reply"


class Skip(Exception):
    """Why one xqueue row is not imported (printed in the report)."""


@dataclass
class Row:
    xqueue_id: int
    queue_name: str
    header: headers.LmsHeader
    body: str
    keys: dict[str, str]
    urls: dict[str, str]
    arrived_at: datetime
    returned_at: datetime | None
    grader_reply: str


@dataclass
class Tally:
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    skipped: list[str] = field(default_factory=list)

    def add(self, queue: str, what: str) -> None:
        self.counts[queue][what] += 1


def parse_source(url: str) -> dict[str, Any]:
    """Connection arguments from ``mysql://user:password@host:port/database``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise CommandError(f"--source must be a mysql:// URL (mysql://user:password@host:3306/xqueue), not {url!r}")
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not database or not parts.hostname:
        raise CommandError("--source must name a host and a database: mysql://user:password@host:3306/xqueue")
    try:
        port = parts.port or 3306
    except ValueError:
        raise CommandError("--source has an invalid port") from None
    return {
        "host": parts.hostname,
        "port": port,
        "user": urllib.parse.unquote(parts.username or "root"),
        "password": urllib.parse.unquote(parts.password or ""),
        "database": database,
    }


def _text(value: Any, column: str) -> str:
    """A column's text, refusing what gradequeue's databases cannot store faithfully."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise Skip(f"{column} is not valid UTF-8") from None
    decoded = str(value)
    problem = text.character_problem(decoded)
    if problem is not None:
        raise Skip(f"{column} contains {problem}")
    return decoded


def _json(value: str, column: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        # ValueError also covers an integer of more digits than Python converts.
        raise Skip(f"{column} is not JSON") from None


def _file_map(column_text: str, column: str) -> dict[str, str]:
    if not column_text.strip():
        return {}
    value = _json(column_text, column)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise Skip(f"{column} is not a JSON object of names to strings")
    return value


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    # Django with USE_TZ (as xqueue runs) stores UTC in MySQL's zone-less DATETIME.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_row(raw: tuple[Any, ...]) -> Row:
    """Check one ``queue_submission`` row (the COLUMNS, in order) as the submit endpoint checks a request."""
    xqueue_id, queue_col, header_col, body_col, keys_col, urls_col, arrival, returned, reply_col = raw
    queue_name = _text(queue_col, "queue_name").strip()
    if not queue_name:
        raise Skip("queue_name is empty")
    if len(queue_name) > Queue._meta.get_field("name").max_length:  # type: ignore[operator]
        raise Skip("queue_name is too long for a gradequeue queue")
    try:
        header = headers.lms_header(_text(header_col, "xqueue_header"))
    except headers.Invalid as why:
        raise Skip(f"xqueue_header {why}") from None
    except text.Refused as why:
        raise Skip(str(why)) from None
    if header.queue_name != queue_name:
        raise Skip(f"xqueue_header names queue {header.queue_name!r}, the row {queue_name!r}")
    refused = callbacks.refusal(header.lms_callback_url)
    if refused:
        raise Skip(refused + " (GRADEQUEUE_CALLBACK_HOSTS)")
    return Row(
        xqueue_id=int(xqueue_id),
        queue_name=queue_name,
        header=header,
        body=_text(body_col, "xqueue_body"),
        keys=_file_map(_text(keys_col, "s3_keys"), "s3_keys"),
        urls=_file_map(_text(urls_col, "s3_urls"), "s3_urls"),
        arrived_at=_aware(arrival) or timezone.now(),
        returned_at=_aware(returned),
        grader_reply=_text(reply_col, "grader_reply").strip(),
    )


class FileSource:
    """Reads a submission's files from xqueue's storage folder or from the URLs xqueue recorded."""

    def __init__(self, root: Path | None, timeout: float) -> None:
        self.root = root.resolve() if root else None
        self.timeout = timeout
        self.limit = int(setting("MAX_FILE_BYTES"))
        self.http = requests.Session()
        self.http.trust_env = True

    def read_all(self, row: Row) -> dict[str, bytes]:
        if not row.keys and not row.urls:
            return {}
        if self.root is not None:
            keys = row.keys
            if EXTERNAL_KEYS in keys:
                inner = _json(
                    self._read_path(row.queue_name, keys[EXTERNAL_KEYS]).decode("utf-8", "replace"), "file list"
                )
                keys = _file_map(json.dumps(inner.get("keys") if isinstance(inner, dict) else None), "file list")
            return {name: self._read_path(row.queue_name, key) for name, key in keys.items()}
        urls = row.urls
        if EXTERNAL_URLS in urls:
            inner = _json(self._read_url(urls[EXTERNAL_URLS]).decode("utf-8", "replace"), "file list")
            urls = _file_map(json.dumps(inner.get("files") if isinstance(inner, dict) else None), "file list")
        return {name: self._read_url(url) for name, url in urls.items()}

    def _read_path(self, queue_name: str, key: str) -> bytes:
        assert self.root is not None
        # xqueue saved each file as <queue name>/<key> in its storage.
        path = (self.root / queue_name / key).resolve()
        if not path.is_relative_to(self.root):
            raise Skip(f"file key {key!r} points outside --files-root")
        try:
            size = path.stat().st_size
            if size > self.limit:
                raise Skip(f"file {key!r} is too large: {size} bytes (limit {self.limit} bytes)")
            return path.read_bytes()
        except OSError as exc:
            raise Skip(f"file {queue_name}/{key} cannot be read under --files-root: {exc.strerror}") from None

    def _read_url(self, url: str) -> bytes:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise Skip(f"file URL {url[:200]!r} is not http(s); give --files-root to read xqueue's storage")
        try:
            with self.http.get(url, timeout=self.timeout, stream=True, allow_redirects=False) as response:
                if response.status_code != 200:
                    raise Skip(f"file URL answered HTTP {response.status_code}: {url[:200]}")
                data = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > self.limit:
                        raise Skip(f"file at {url[:200]} is larger than {self.limit} bytes")
                return bytes(data)
        except requests.RequestException as exc:
            raise Skip(f"file URL could not be fetched ({type(exc).__name__}): {url[:200]}") from None


class Command(BaseCommand):
    help = (
        "Import the unfinished submissions of an openedx/xqueue MySQL database (not retired, not acknowledged by "
        "the LMS) into the gradequeue queues of the same names: waiting ones for grading, graded-but-undelivered "
        "ones for delivery. Idempotent. Example: manage.py import_xqueue --source mysql://xqueue@mysql:3306/xqueue "
        "--source-password-env XQUEUE_DB_PASSWORD --files-root /xqueue/media --dry-run"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", required=True, help="xqueue's database: mysql://user[:password]@host:3306/db")
        parser.add_argument(
            "--source-password-env", metavar="VAR", help="Read the database password from this variable"
        )
        parser.add_argument(
            "--origin",
            default="xqueue",
            help="A name for this xqueue installation (default 'xqueue'); only if you import from more than one",
        )
        parser.add_argument(
            "--files-root",
            type=Path,
            help="xqueue's storage folder (its MEDIA_ROOT): files are read from <root>/<queue>/<key> instead of URLs",
        )
        parser.add_argument("--file-timeout", type=float, default=30.0, help="Seconds per file download (30)")
        parser.add_argument(
            "--queue", action="append", default=[], metavar="NAME", help="Import only this queue (repeatable)"
        )
        parser.add_argument(
            "--create-queues",
            action="store_true",
            help="Create missing queues (pull mode); without it their rows are skipped",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be imported; change nothing")
        parser.add_argument("--batch", type=int, default=500, help="Rows read from xqueue per query (500)")

    def handle(self, *args: Any, **opts: Any) -> None:
        import pymysql

        connect = parse_source(opts["source"])
        if opts["source_password_env"]:
            password = os.environ.get(opts["source_password_env"])
            if password is None:
                raise CommandError(f"Environment variable {opts['source_password_env']} is not set")
            connect["password"] = password
        if opts["files_root"] is not None and not opts["files_root"].is_dir():
            raise CommandError(f"--files-root {opts['files_root']} is not a folder")
        if opts["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        try:
            # Text comes back as bytes and is decoded row by row, so that one undecodable row is skipped alone.
            source = pymysql.connect(
                **connect, charset="utf8mb4", use_unicode=False, connect_timeout=10, read_timeout=300, autocommit=True
            )
        except pymysql.MySQLError as exc:
            raise CommandError(f"Cannot connect to xqueue's database: {exc}") from None
        tally = Tally()
        fetcher = FileSource(opts["files_root"], opts["file_timeout"])
        try:
            for batch in self._batches(source, opts["queue"], opts["batch"]):
                self._import_batch(batch, opts, fetcher, tally)
        finally:
            source.close()
        self._report(tally, connect, dry_run=opts["dry_run"])

    def _batches(self, source: Any, queues: list[str], size: int) -> Any:
        """Unfinished rows in xqueue id order, ``size`` at a time (keyset pagination: no long-held cursor)."""
        last = 0
        where = "retired = 0 AND lms_ack = 0 AND id > %s"
        params: list[Any] = []
        if queues:
            where += " AND queue_name IN (" + ", ".join(["%s"] * len(queues)) + ")"
            params = list(queues)
        while True:
            with source.cursor() as cursor:
                cursor.execute(
                    f"SELECT {COLUMNS} FROM queue_submission WHERE {where} ORDER BY id LIMIT %s",  # noqa: S608
                    [last, *params, size],
                )
                rows = cursor.fetchall()
            if not rows:
                return
            yield rows
            last = int(rows[-1][0])

    def _import_batch(self, rows: Any, opts: dict[str, Any], fetcher: FileSource, tally: Tally) -> None:
        done = set(
            XqueueImport.objects.filter(origin=opts["origin"], xqueue_id__in=[int(r[0]) for r in rows]).values_list(
                "xqueue_id", flat=True
            )
        )
        queues: dict[str, Queue | None] = {}
        for raw in rows:
            xqueue_id = int(raw[0])
            label = _label(raw[1])
            try:
                if xqueue_id in done:
                    tally.add(label, "already")
                    continue
                row = parse_row(raw)
                label = row.queue_name
                if row.queue_name not in queues:
                    queues[row.queue_name] = self._queue(row.queue_name, opts)
                queue = queues[row.queue_name]
                if queue is None and not (opts["dry_run"] and opts["create_queues"]):
                    raise Skip(f"queue {row.queue_name!r} does not exist (create it, or give --create-queues)")
                what = "delivery" if row.grader_reply else "waiting"
                if opts["dry_run"]:
                    superseded = lifecycle.unfinished_for_callback(row.header.lms_callback_url) is not None
                    tally.add(label, "superseded" if superseded else what)
                    continue
                assert queue is not None
                outcome = self._import_one(row, queue, opts["origin"], fetcher)
                tally.add(label, _OUTCOME_COLUMN[outcome])
                if outcome is lifecycle.ImportOutcome.SUPERSEDED:
                    tally.skipped.append(
                        f"xqueue #{xqueue_id} ({label}): a newer answer to the same problem is already in gradequeue"
                    )
            except Skip as why:
                tally.add(label, "skipped")
                tally.skipped.append(f"xqueue #{xqueue_id} ({label}): {why}")
            except Exception as exc:
                # One bad row never stops the rows behind it.
                tally.add(label, "skipped")
                tally.skipped.append(f"xqueue #{xqueue_id} ({label}): unexpected {type(exc).__name__}: {exc}")

    def _queue(self, name: str, opts: dict[str, Any]) -> Queue | None:
        queue = Queue.objects.filter(name=name).first()
        if queue is None and opts["create_queues"] and not opts["dry_run"]:
            queue, _ = Queue.objects.get_or_create(name=name, defaults={"mode": QueueMode.PULL})
            self.stdout.write(f"Created queue {name} (pull mode); grant it to the LMS account with create_account")
        return queue

    def _import_one(self, row: Row, queue: Queue, origin: str, fetcher: FileSource) -> lifecycle.ImportOutcome:
        data = fetcher.read_all(row)
        uploads: dict[str, UploadedFile] = {name: SimpleUploadedFile(name, content) for name, content in data.items()}
        try:
            files.check_limits(uploads.values())
        except files.FileLimitError as exc:
            raise Skip(str(exc)) from None
        stored = files.store(uploads) if uploads else {}
        item = lifecycle.ImportedSubmission(
            new=lifecycle.NewSubmission(
                queue=queue,
                lms_header=row.header.text,
                lms_callback_url=row.header.lms_callback_url,
                lms_key=row.header.lms_key,
                body=row.body,
                files=stored,
            ),
            origin=origin,
            xqueue_id=row.xqueue_id,
            arrived_at=row.arrived_at,
            grader_reply=row.grader_reply,
            returned_at=row.returned_at,
        )
        try:
            outcome, _pk = lifecycle.import_submission(item, actor="system:import_xqueue")
        except Exception:
            files.delete(stored.values())
            raise
        if outcome in (lifecycle.ImportOutcome.ALREADY_IMPORTED, lifecycle.ImportOutcome.SUPERSEDED):
            files.delete(stored.values())
        return outcome

    def _report(self, tally: Tally, connect: dict[str, Any], *, dry_run: bool) -> None:
        for line in tally.skipped:
            self.stderr.write(f"skipped {line}")
        source = f"mysql://{connect['host']}:{connect['port']}/{connect['database']}"
        verb = "Would import" if dry_run else "Imported"
        self.stdout.write(f"{verb} from {source}:")
        columns = [("waiting", "WAITING"), ("delivery", "FOR DELIVERY"), ("already", "ALREADY IMPORTED")]
        columns += [("superseded", "SUPERSEDED"), ("skipped", "SKIPPED")]
        names = sorted(tally.counts)
        width = max([len("QUEUE"), len("TOTAL"), *(len(n) for n in names)])
        self.stdout.write("  ".join([f"{'QUEUE':<{width}}", *(title for _, title in columns)]))
        total: Counter[str] = Counter()
        for name in names:
            total.update(tally.counts[name])
            self.stdout.write(self._line(name, tally.counts[name], columns, width))
        self.stdout.write(self._line("TOTAL", total, columns, width))

    @staticmethod
    def _line(name: str, counts: Counter[str], columns: list[tuple[str, str]], width: int) -> str:
        return "  ".join([f"{name:<{width}}", *(f"{counts[key]:>{len(title)}}" for key, title in columns)])


_OUTCOME_COLUMN = {
    lifecycle.ImportOutcome.WAITING: "waiting",
    lifecycle.ImportOutcome.FOR_DELIVERY: "delivery",
    lifecycle.ImportOutcome.ALREADY_IMPORTED: "already",
    lifecycle.ImportOutcome.SUPERSEDED: "superseded",
}


def _label(value: Any) -> str:
    """The queue name to file a row under in the summary, even when the row is broken."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    name = str(value or "").strip()
    if not name or not name.isprintable() or len(name) > 128:
        return "(invalid queue name)"
    return name
