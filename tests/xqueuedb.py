"""A real openedx/xqueue database on MariaDB/MySQL, for the tests of manage.py import_xqueue.

The table is written from the facts of xqueue's ``Submission`` model (``db_table = 'queue_submission'``, as
its Django migrations create it on MySQL): CharField(128/1024) is VARCHAR, TextField LONGTEXT,
DateTimeField DATETIME(6), BooleanField BOOL, with its three compound indexes.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pymysql

# The MySQL server the tests use, as a URL without a database: root with no password on 127.0.0.1 by default.
SERVER_URL = os.environ.get("GRADEQUEUE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
# Every database a test creates starts with this, so that parallel runs and other projects never collide.
PREFIX = os.environ.get("GRADEQUEUE_TEST_MYSQL_PREFIX", "gq_h7_tutor")

QUEUE_SUBMISSION_DDL = """
CREATE TABLE queue_submission (
    id INTEGER AUTO_INCREMENT NOT NULL PRIMARY KEY,
    requester_id VARCHAR(128) NOT NULL,
    lms_callback_url VARCHAR(128) NOT NULL,
    queue_name VARCHAR(128) NOT NULL,
    xqueue_header VARCHAR(1024) NOT NULL,
    xqueue_body LONGTEXT NOT NULL,
    s3_keys VARCHAR(1024) NOT NULL,
    s3_urls VARCHAR(1024) NOT NULL,
    arrival_time DATETIME(6) NOT NULL,
    pull_time DATETIME(6) NULL,
    push_time DATETIME(6) NULL,
    return_time DATETIME(6) NULL,
    grader_id VARCHAR(128) NOT NULL,
    pullkey VARCHAR(128) NOT NULL,
    grader_reply LONGTEXT NOT NULL,
    num_failures INTEGER NOT NULL,
    lms_ack BOOL NOT NULL,
    retired BOOL NOT NULL,
    INDEX queue_submission_lms_callback_url (lms_callback_url),
    INDEX queue_submission_retired (retired),
    INDEX queue_submi_queue_n_push (queue_name, retired, push_time, arrival_time),
    INDEX queue_submi_queue_n_pull (queue_name, retired, pull_time, arrival_time),
    INDEX queue_submi_lms_cal_retired (lms_callback_url, retired)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""


def server_args() -> dict[str, Any]:
    parts = urllib.parse.urlsplit(SERVER_URL)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": urllib.parse.unquote(parts.username or "root"),
        "password": urllib.parse.unquote(parts.password or ""),
    }


class XqueueDB:
    """One freshly created xqueue database; ``url`` is what ``import_xqueue --source`` takes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conn = pymysql.connect(**server_args(), database=name, charset="utf8mb4", autocommit=True)

    @property
    def url(self) -> str:
        args = server_args()
        auth = urllib.parse.quote(args["user"]) + (
            ":" + urllib.parse.quote(args["password"]) if args["password"] else ""
        )
        return f"mysql://{auth}@{args['host']}:{args['port']}/{self.name}"

    def insert(
        self,
        *,
        queue_name: str = "python-101",
        header: str | dict[str, Any] | None = None,
        callback_url: str = "http://127.0.0.1:9/courses/c1/xqueue/1/p1/score_update",
        lms_key: str = "lms-key-1",
        body: str = '{"student_response": "42", "grader_payload": "", "student_info": "{}"}',
        keys: dict[str, str] | str = "{}",
        urls: dict[str, str] | str = "{}",
        arrival_time: datetime | None = None,
        pull_time: datetime | None = None,
        return_time: datetime | None = None,
        grader_reply: str = "",
        num_failures: int = 0,
        lms_ack: bool = False,
        retired: bool = False,
    ) -> int:
        """Insert one row as xqueue writes it; returns its id."""
        if header is None:
            header = {"lms_callback_url": callback_url, "lms_key": lms_key, "queue_name": queue_name}
        header_text = header if isinstance(header, str) else json.dumps(header)
        with self.conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO queue_submission (requester_id, lms_callback_url, queue_name, xqueue_header, "
                "xqueue_body, s3_keys, s3_urls, arrival_time, pull_time, push_time, return_time, grader_id, pullkey, "
                "grader_reply, num_failures, lms_ack, retired) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, %s, %s, %s, %s)",
                [
                    "10.0.0.1",
                    callback_url[:128],
                    queue_name,
                    header_text,
                    body,
                    keys if isinstance(keys, str) else json.dumps(keys),
                    urls if isinstance(urls, str) else json.dumps(urls),
                    arrival_time or datetime(2026, 11, 30, 8, 0, 0),
                    pull_time,
                    return_time,
                    "10.0.0.2" if pull_time else "",
                    "pullkey" if pull_time else "",
                    grader_reply,
                    num_failures,
                    lms_ack,
                    retired,
                ],
            )
            return int(cursor.lastrowid)

    def insert_many(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows of (queue_name, header, callback_url, body, arrival_time, pull_time, return_time, grader_reply)."""
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO queue_submission (requester_id, lms_callback_url, queue_name, xqueue_header, "
                "xqueue_body, s3_keys, s3_urls, arrival_time, pull_time, push_time, return_time, grader_id, pullkey, "
                "grader_reply, num_failures, lms_ack, retired) "
                "VALUES ('10.0.0.1', %s, %s, %s, %s, '{}', '{}', %s, %s, NULL, %s, '', '', %s, 0, 0, 0)",
                [
                    (url[:128], queue, header, body, arrival, pull, ret, reply)
                    for queue, header, url, body, arrival, pull, ret, reply in rows
                ],
            )

    def execute(self, sql: str, params: Any = None) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)


@contextmanager
def xqueue_database() -> Iterator[XqueueDB]:
    """Create a database with xqueue's table, yield it, drop it."""
    name = f"{PREFIX}_xq_{secrets.token_hex(4)}"
    admin = pymysql.connect(**server_args(), charset="utf8mb4", autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        db = XqueueDB(name)
        try:
            db.execute(QUEUE_SUBMISSION_DDL)
            yield db
        finally:
            db.conn.close()
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        admin.close()
