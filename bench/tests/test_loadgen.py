"""The benchmark's load generator (bench/loadgen.py): its HTTP/1.1 client and its LMS listener, parsing with
httptools, against the standard library's server and client and against raw bytes on a socket."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import loadgen
import pytest


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str, bytes]] = []

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        Handler.seen.append((self.command, self.path, self.headers.get("Cookie") or "", body))
        if self.path.startswith("/login"):
            self.send_response(200)
            self.send_header("Set-Cookie", "csrftoken=tok; Path=/")
            self.send_header("Set-Cookie", "sessionid=abc; HttpOnly; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        elif self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        elif self.path.startswith("/close"):
            self.send_response(302)
            self.send_header("Location", "/login/")
            self.send_header("Set-Cookie", 'sessionid=""; Max-Age=0; Path=/')
            self.send_header("Connection", "close")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.close_connection = True
        else:
            payload = b"x" * 70000 + body
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_session_keeps_cookies_reads_every_body_shape_and_reconnects(server: str) -> None:
    session = loadgen.Session(server, timeout=5)
    status, _, reply = session.request("GET", "/login/")
    assert status == 200 and reply.get_all("set-cookie")[1].startswith("sessionid=abc")
    assert session.cookies == {"csrftoken": "tok", "sessionid": "abc"}

    status, body, _ = session.request("POST", "/echo", {"a": "1 2", "b": "é"})
    assert status == 200 and body == b"x" * 70000 + b"a=1+2&b=%C3%A9"  # longer than one recv
    method, path, cookie, sent = Handler.seen[-1]
    assert (method, path, sent) == ("POST", "/echo", b"a=1+2&b=%C3%A9")
    assert cookie == "csrftoken=tok; sessionid=abc"

    assert session.request("GET", "/chunked")[:2] == (200, b"hello world")
    first = session.reader
    # A reply that closes the connection (and drops the session cookie): the next request opens a new one.
    status, _, _ = session.request("GET", "/close")
    assert status == 302 and session.reader is None and "sessionid" not in session.cookies
    assert session.request("GET", "/chunked")[:2] == (200, b"hello world")
    assert session.reader is not None and session.reader is not first


def raw_server(reply: bytes) -> tuple[str, list[bytes]]:
    """A server that reads one request, sends ``reply`` as it is and closes: what each connection received."""
    sock = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        with sock:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                with conn:
                    received.append(conn.recv(65536))
                    conn.sendall(reply)
                    conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", received


def test_a_reply_in_http_1_0_ends_the_connection() -> None:
    base, _ = raw_server(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    session = loadgen.Session(base, timeout=5)
    status, body, reply = session.request("GET", "/")
    assert (status, body, reply.keep_alive, session.reader) == (200, b"ok", False, None)


def test_a_reply_without_length_is_read_until_the_connection_closes() -> None:
    base, received = raw_server(b"HTTP/1.1 200 OK\r\nX-A:  spaced \r\n\r\nall of it\r\nuntil the end")
    status, body, reply = loadgen.Session(base, timeout=5).request("POST", "/p?q=1", {"k": "v"})
    assert (status, body, reply.get("x-a"), reply.keep_alive) == (200, b"all of it\r\nuntil the end", "spaced", False)
    assert received[0].startswith(b"POST /p?q=1 HTTP/1.1\r\n") and received[0].endswith(b"\r\n\r\nk=v")


def test_a_reply_that_is_not_http_or_is_cut_short_is_an_http_error() -> None:
    for reply in (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"):
        base, received = raw_server(reply)
        with pytest.raises(loadgen.HTTPError):
            loadgen.Session(base, timeout=5).request("GET", "/")
        assert len(received) == 2  # the request was sent once more, on a new connection


def test_session_retries_once_on_a_connection_the_server_closed(server: str) -> None:
    session = loadgen.Session(server, timeout=5)
    session.request("GET", "/chunked")
    assert session.reader is not None
    session.reader.sock.shutdown(socket.SHUT_RDWR)  # as a server closing an idle keep-alive connection
    assert session.request("GET", "/chunked")[:2] == (200, b"hello world")


def test_callback_listener_times_each_post_on_kept_alive_connections() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    callbacks = loadgen.Callbacks(port).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for number in ("7", "8", "7"):
            conn.request("POST", f"/cb/{number}", body=b"xqueue_body=%7B%7D", headers={"Content-Type": "a/b"})
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"")
        conn.request("GET", "/cb/9")
        assert conn.getresponse().status == 405
        conn.close()
        assert {k: len(v) for k, v in callbacks.arrivals.items()} == {"7": 2, "8": 1}
        # Two requests in one packet, the second with a chunked body and Connection: close: both answered.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(
                b"POST /cb/10 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                b"POST /cb/11?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n"
            )
            answers = b""
            while chunk := raw.recv(65536):
                answers += chunk
        assert answers == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2
        assert {k: len(v) for k, v in callbacks.arrivals.items()} == {"7": 2, "8": 1, "10": 1, "11": 1}
    finally:
        callbacks.stop()


class WatcherLoginHandler(BaseHTTPRequestHandler):
    """An XQueue login page: a csrftoken cookie on the GET, a session cookie on the POST; records headers."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def _reply(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        WatcherLoginHandler.seen.append((self.command, self.path, dict(self.headers), body))
        payload = b'{"return_code": 0, "content": "Logged in"}'
        self.send_response(200)
        if self.command == "GET":
            self.send_header("Set-Cookie", "csrftoken=tok1; Path=/")
        else:
            self.send_header("Set-Cookie", "sessionid=s1; HttpOnly; Path=/")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


def test_the_requests_client_logs_in_as_xqueue_watcher_does() -> None:
    WatcherLoginHandler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), WatcherLoginHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        session = loadgen.RequestsSession(base, timeout=5)
        assert session.login("grader1", "pw")
        status, body, _ = session.request("POST", "/xqueue/put_result/", {"xqueue_header": "h"})
        assert status == 200 and body.startswith(b'{"return_code": 0')
    finally:
        httpd.shutdown()
        httpd.server_close()
    (get, login, put) = WatcherLoginHandler.seen
    assert (get[0], get[1]) == ("GET", "/xqueue/login/")
    assert (login[0], login[3]) == ("POST", b"username=grader1&password=pw")
    assert login[2]["X-CSRFToken"] == "tok1" and login[2]["Referer"] == base + "/xqueue/login/"
    # Every later request carries the token, the server's address as Referer, and both cookies.
    assert (put[2]["X-CSRFToken"], put[2]["Referer"]) == ("tok1", base)
    assert sorted(put[2]["Cookie"].split("; ")) == ["csrftoken=tok1", "sessionid=s1"]
