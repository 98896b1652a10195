"""Hostile requests that go wrong before any view runs, over real HTTP against the production web server:
a charset that is not a text encoding, a query string over Django's redirect limit, chunked bodies."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from grading.models import Queue, Submission, SubmissionEvent
from tests.conftest import LMS_PASSWORD
from tests.support.services import running_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module: these tests store nothing on disk, and each makes its own accounts."""
    with running_server(str(tmp_path_factory.mktemp("media"))) as (base_url, _process):
        yield base_url


CALLBACK = "http://127.0.0.1:9/courses/c/xqueue/1/p/score_update"


def request(
    base_url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def login(base_url: str, username: str = "lms", password: str = LMS_PASSWORD) -> str:
    status, headers, body = request(
        base_url,
        "POST",
        "/xqueue/login/",
        f"username={username}&password={password}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, json.loads(body)) == (200, {"return_code": 0, "content": "Logged in"})
    return "; ".join(cookie.split(";")[0] for cookie in headers.get_all("Set-Cookie") or [])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/xqueue/status/?a=1"),
        ("POST", "/xqueue/login/?a=1"),
        ("GET", "/xqueue/get_queuelen/?queue_name=served"),
        ("POST", "/xqueue/submit/?a=1"),
        ("POST", "/xqueue/put_result/?a=1"),
    ],
)
def test_a_charset_that_is_not_a_text_encoding_gets_the_envelope(server: str, method: str, path: str) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=rot13"}
    status, _, body = request(server, method, path, b"username=a&password=b", headers)
    assert status == 200, body[:300]
    assert json.loads(body) == {"return_code": 1, "content": "Unsupported charset 'rot13'"}


@pytest.mark.parametrize("charset", ["base64", "zlib_codec", "hex", "uu"])
def test_other_non_text_codecs_are_refused_the_same_way(server: str, charset: str) -> None:
    headers = {"Content-Type": f"text/plain; charset={charset}"}
    status, _, body = request(server, "GET", "/xqueue/status/?x=1", None, headers)
    assert (status, json.loads(body)) == (200, {"return_code": 1, "content": f"Unsupported charset '{charset}'"})


def test_a_non_text_charset_outside_the_xqueue_api_is_a_plain_400_not_a_500(server: str) -> None:
    headers = {"Content-Type": "text/plain; charset=rot13"}
    status, _, body = request(server, "GET", "/admin/login/?next=/admin/", None, headers)
    assert status == 400
    assert body == b"Unsupported charset 'rot13'\n"


def test_an_unknown_charset_is_ignored_as_django_does(server: str) -> None:
    headers = {"Content-Type": "text/plain; charset=no-such-codec"}
    status, _, body = request(server, "GET", "/xqueue/status/?x=1", None, headers)
    assert (status, json.loads(body)) == (200, {"return_code": 0, "content": "OK"})


def test_an_unauthenticated_query_string_over_16_kib_gets_the_302_to_login(server: str) -> None:
    status, headers, _ = request(server, "GET", "/xqueue/get_submission/?queue_name=" + "q" * 20_000)
    assert status == 302
    assert headers["Location"] == "/xqueue/login/?next=/xqueue/get_submission/"


def test_a_chunked_login_body_is_read(server: str, accounts: Queue) -> None:
    body = chunked(b"username=lms&", f"password={LMS_PASSWORD}".encode())
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"}
    status, reply_headers, reply = request(server, "POST", "/xqueue/login/", body, headers)
    assert (status, json.loads(reply)) == (200, {"return_code": 0, "content": "Logged in"})
    assert "sessionid=" in str(reply_headers.get_all("Set-Cookie"))


def test_a_chunked_multipart_submission_is_stored_whole(server: str, accounts: Queue) -> None:
    cookie = login(server)
    header = json.dumps({"lms_callback_url": CALLBACK, "lms_key": "k", "queue_name": "served"})
    boundary = "gq-boundary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="xqueue_header"\r\n\r\n{header}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="xqueue_body"\r\n\r\nprint(42)\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="answer.py"; filename="answer.py"\r\n'
        f"Content-Type: text/x-python\r\n\r\nprint('file')\n\r\n--{boundary}--\r\n"
    ).encode()
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Transfer-Encoding": "chunked",
        "Cookie": cookie,
    }
    status, _, reply = request(server, "POST", "/xqueue/submit/", chunked(form[:100], form[100:]), headers)
    assert (status, json.loads(reply)) == (200, {"return_code": 0, "content": "1"})
    submission = Submission.objects.get()
    assert (submission.body, list(submission.files)) == ("print(42)", ["answer.py"])


def test_a_chunked_body_over_the_limit_is_refused_with_the_envelope(server: str, accounts: Queue) -> None:
    cookie = login(server)
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = chunked(*([b"xqueue_body=" + b"x" * 65536] + [b"x" * 65536] * (limit // 65536 + 1)))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Transfer-Encoding": "chunked",
        "Cookie": cookie,
    }
    status, _, reply = request(server, "POST", "/xqueue/put_result/", body, headers)
    assert (status, json.loads(reply)) == (
        200,
        {"return_code": 1, "content": f"Request too large (limit {limit} bytes)"},
    )
    assert SubmissionEvent.objects.count() == 0


@pytest.mark.parametrize("path", ["/xqueue/status/", "/xqueue/get_queuelen/"])
def test_over_a_thousand_query_fields_with_a_charset_get_the_envelope(server: str, path: str) -> None:
    # A charset makes Django parse the query string while it builds the request, before any middleware.
    query = "&".join(f"f{i}=1" for i in range(1500))
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    status, _, body = request(server, "GET", f"{path}?{query}", b"x=1", headers)
    assert (status, json.loads(body)) == (200, {"return_code": 1, "content": "Request could not be parsed"})


def test_over_a_thousand_query_fields_with_a_charset_outside_the_api_is_a_plain_400(server: str) -> None:
    query = "&".join(f"f{i}=1" for i in range(1500))
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    status, _, body = request(server, "GET", f"/admin/login/?{query}", None, headers)
    assert (status, body) == (400, b"Request could not be parsed\n")
