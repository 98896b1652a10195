"""The production web server (``python -m config.serve``, Granian) in front of the application, over real HTTP:
the XQueue calls, file uploads and downloads, keep-alive, and the server's own settings."""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile

from config import serve
from grading.models import Queue, Status, Submission
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD
from tests.xqclient import XQueueClient, grade, lms_body

ROOT = Path(__file__).resolve().parents[2]


BINARY = bytes(range(256)) * 64 + b"\r\n\x00\xff"


@pytest.mark.django_db(transaction=True)
def test_the_production_server_carries_a_submission_with_files_from_the_lms_to_a_grader(
    server: str, accounts: Queue
) -> None:
    lms = XQueueClient(server, "lms", LMS_PASSWORD)
    header = {"lms_callback_url": "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update", "lms_key": "k"}
    files = {"answer.py": b"print(42)\n", "data.bin": BINARY}
    assert lms.submit({**header, "queue_name": "served"}, lms_body("42"), files=files) == {
        "return_code": 0,
        "content": "1",
    }

    watcher = XQueueClient(server, "grader", GRADER_PASSWORD, csrf_prelude=True)
    reply = watcher.get_submission("served")
    assert reply["return_code"] == 0, reply
    content = json.loads(reply["content"])
    assert json.loads(content["xqueue_body"])["student_response"] == "42"
    urls = json.loads(content["xqueue_files"])
    assert set(urls) == set(files)
    for name, url in urls.items():
        assert url.startswith(server + "/xqueue/files/")
        assert requests.get(url, timeout=5).content == files[name]

    assert watcher.put_result(content["xqueue_header"], grade()) == {"return_code": 0, "content": ""}
    assert watcher.get_submission("served") == {"return_code": 1, "content": "Queue 'served' is empty"}
    submission = Submission.objects.get()
    assert submission.status in (Status.RETURNED, Status.GRADED, Status.DELIVERED, Status.FAILED)
    assert submission.grader_reply == grade()
    assert watcher.logins == 1  # one session served every call, across the server's workers


@pytest.mark.django_db(transaction=True)
def test_the_production_server_keeps_connections_alive_and_answers_oversized_bodies_with_the_envelope(
    server: str, accounts: Queue
) -> None:
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    statuses = []
    for _ in range(3):
        conn.request("GET", "/xqueue/status/")
        response = conn.getresponse()
        statuses.append((response.status, json.loads(response.read())))
        if _ == 0:
            first_socket = conn.sock
    assert statuses == [(200, {"return_code": 0, "content": "OK"})] * 3
    assert conn.sock is first_socket  # one connection carried all three
    conn.close()

    lms = XQueueClient(server, "lms", LMS_PASSWORD)
    lms.login()
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    reply = lms.session.post(
        f"{server}/xqueue/submit/",
        data={"xqueue_header": "{}", "xqueue_body": "x" * (limit + 1)},
        timeout=10,
        allow_redirects=False,
    )
    assert reply.status_code == 200
    assert reply.json() == {"return_code": 1, "content": f"Request too large (limit {limit} bytes)"}


def test_server_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEB_BIND", "WEB_WORKERS", "WEB_THREADS", "WEB_ACCESS_LOG", "WEB_MAX_RSS", "WEB_APP"):
        monkeypatch.delenv(name, raising=False)
    defaults = serve.options()
    assert (defaults["target"], defaults["address"], defaults["port"]) == ("config.wsgi:application", "127.0.0.1", 8000)
    assert defaults["workers"] == (os.cpu_count() or 1)
    assert (defaults["blocking_threads"], defaults["log_access"], defaults["workers_max_rss"]) == (8, False, None)

    monkeypatch.setenv("WEB_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("WEB_WORKERS", "3")
    monkeypatch.setenv("WEB_THREADS", "6")
    monkeypatch.setenv("WEB_ACCESS_LOG", "true")
    monkeypatch.setenv("WEB_MAX_RSS", "512")
    chosen = serve.options()
    assert (chosen["address"], chosen["port"], chosen["workers"], chosen["blocking_threads"]) == ("0.0.0.0", 9000, 3, 6)
    assert (chosen["log_access"], chosen["workers_max_rss"]) == (True, 512)

    for name, value, message in (
        ("WEB_BIND", "nowhere", "is not host:port"),
        ("WEB_WORKERS", "many", "is not an integer"),
        ("WEB_THREADS", "0", "must be at least 1"),
        ("WEB_ACCESS_LOG", "perhaps", "is not a boolean"),
    ):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(SystemExit, match=message):
                serve.options()


def wsgi_environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
    }


@pytest.mark.django_db
def test_ordinary_replies_reach_the_server_whole_and_closed_and_streams_stay_streams() -> None:
    from django.core.signals import request_finished
    from django.http import FileResponse

    from grading import files

    app = serve.load("config.wsgi:application")
    finished: list[Any] = []

    def note(**kwargs: Any) -> None:
        finished.append(kwargs)

    request_finished.connect(note, weak=False)
    try:
        statuses: list[str] = []
        reply = app(wsgi_environ("/xqueue/status/"), lambda status, headers, exc_info=None: statuses.append(status))
        assert reply == [b'{"return_code": 0, "content": "OK"}']
        assert statuses == ["200 OK"] and len(finished) == 1  # closed: Django's request_finished has run

        stored = files.store({"a.txt": SimpleUploadedFile("a.txt", b"file body")})
        url = files.urls_for(stored, "http://127.0.0.1/")["a.txt"]
        stream = app(wsgi_environ(urlsplit(url).path), lambda status, headers, exc_info=None: statuses.append(status))
        assert isinstance(stream, FileResponse) and statuses[-1] == "200 OK"
        assert b"".join(stream) == b"file body"
        stream.close()
    finally:
        request_finished.disconnect(note)
