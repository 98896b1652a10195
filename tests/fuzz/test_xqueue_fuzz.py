"""Property-based fuzzing of every XQueue endpoint over real HTTP against the production web server.

Hypothesis builds requests for login, logout, status, submit (form-encoded, multipart with files, chunked,
raw bytes), get_queuelen, get_submission, put_result and the file downloads, sent as an anonymous client, as
an LMS account and as a grader, to ``python -m config.serve`` on the configured database (so PostgreSQL's own
refusals show). The strategies mix random text with the shapes attackers and careless clients send: NUL,
lone surrogates (as JSON escapes and as raw invalid UTF-8), 100 000-deep JSON, 5 000-digit numbers, Unicode
digits, file parts where fields were expected, non-text charsets, 20 KiB query strings, another tenant's
callback URLs, submission ids and lease keys.

Properties, checked on every reply:

- no 5xx;
- the protocol's envelope (HTTP 200, ``{"return_code": 0|1, "content": ...}``), or its 302 to the login page for
  an unauthenticated call; file downloads answer 200, 403, 404 or 410;
- a refusal stores nothing: no submission, no event of the kinds a client's request makes, no file;
- the other tenant's submissions (another LMS account, another queue, another grader) are never touched;

and afterwards the pipeline (web server, broker, Celery worker, LMS callback) still delivers a normal
submission's grade.

``GRADEQUEUE_FUZZ_EXAMPLES`` sets the examples per endpoint (default 25, for CI); ``GRADEQUEUE_FUZZ_REPORT``
names a JSON file for the per-endpoint request counts, which are also printed at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from grading import lifecycle
from grading.models import Queue, Role, Status, Submission, SubmissionEvent
from tests.conftest import GRADER_PASSWORD, LMS_PASSWORD, make_account
from tests.lms import FakeLMS
from tests.support.services import running_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery]

EXAMPLES = int(os.environ.get("GRADEQUEUE_FUZZ_EXAMPLES", "25"))
REPORT = os.environ.get("GRADEQUEUE_FUZZ_REPORT", "")

# Granian answers 414 (URI Too Long) or 431 itself for a request target over 64 KiB.
HTTP_TARGET_LIMIT = 65_535
PROTECTED = {"submit", "get_queuelen", "get_submission", "put_result"}
# Events a client's request can make (the worker adds graded/failed/delivered ones on its own schedule).
CLIENT_EVENTS = (Status.QUEUED, Status.PULLED, Status.RETURNED, Status.SUPERSEDED)
TARGET_PASSWORD = "target-password-1"

# --- Strategies -----------------------------------------------------------------------------------------

HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\ud83d",
    "\ud83d\ude00",
    "\u00b2",
    "\u2460",
    "\u0663",
    "\uff11",
    "9" * 5000,
    "-1",
    "0",
    "1e999",
    "NaN",
    "[" * 100_000,
    "{" * 20_000,
    '{"a":' * 3000,
    "\ufeff",
    "\u202e",
    "../../etc/passwd",
    "%00",
    "%zz",
    "\r\n",
    "x" * 20_000,
    "null",
    "true",
    "[]",
    "{}",
    "caf\u00e9 \U0001f4a9",
]
# Text with every code point, surrogates included (Hypothesis leaves them out unless asked).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
text = st.one_of(any_text, st.sampled_from(HOSTILE))
small_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
CHARSETS = ["utf-8", "latin-1", "utf-16", "utf-7", "rot13", "base64", "zlib_codec", "idna", "no-such-codec"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


def wire(value: str) -> bytes:
    """Text as bytes on the wire: UTF-8, lone surrogates passed through as the invalid bytes they make."""
    return value.encode("utf-8", "surrogatepass")


@dataclass
class FilePart:
    filename: str
    content: bytes


@dataclass
class Shaped:
    """One request: method, path with its query string, headers and body."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    chunked: bool = False


def rare(draw: Any, odds: int) -> bool:
    """True once in ``odds + 1`` draws, roughly. (Hypothesis favours the first of sampled values, so "not rare"
    goes first; with ``st.integers`` it would favour 0.)"""
    return bool(draw(st.sampled_from([False] * odds + [True])))


def mostly(draw: Any, usual: Any, hostile: st.SearchStrategy[Any], odds: int = 3) -> Any:
    """``usual`` (a value, or a strategy to draw from) ``odds`` times in ``odds + 1``, else a draw of ``hostile``.

    Most requests are then valid but for one or two hostile parts, and reach the code behind the checks.
    """
    if not rare(draw, odds):
        return draw(usual) if isinstance(usual, st.SearchStrategy) else usual
    return draw(hostile)


def json_text(draw: Any, obj: Any) -> str:
    """``obj`` as JSON text the way a client might send it, or something that is not quite JSON."""
    style = draw(st.sampled_from(["ascii", "ascii", "raw", "raw", "hostile"]))
    if style == "hostile":
        return draw(text)
    try:
        return json.dumps(obj, ensure_ascii=style == "ascii", allow_nan=True)
    except (ValueError, RecursionError):
        return draw(text)


def encode_form(draw: Any, fields: list[tuple[str, str | FilePart]]) -> tuple[dict[str, str], bytes, bool]:
    """Headers, body and whether to send it chunked: form-encoded, multipart or raw, with a drawn charset."""
    kind = mostly(draw, st.sampled_from(["urlencoded", "multipart"]), st.just("raw"), odds=7)
    has_files = any(isinstance(value, FilePart) for _, value in fields)
    if kind == "urlencoded" and not has_files:
        body = b"&".join(
            urllib.parse.quote_plus(wire(name)).encode() + b"=" + urllib.parse.quote_plus(wire(str(value))).encode()
            for name, value in fields
        )
        content_type = "application/x-www-form-urlencoded"
    elif kind == "raw":
        body = draw(st.binary(max_size=200))
        content_type = draw(st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]))
    else:
        boundary = "gq" + draw(st.text("abcdef0123456789", min_size=1, max_size=12))
        parts = []
        for name, value in fields:
            disposition = b'form-data; name="' + wire(name) + b'"'
            if isinstance(value, FilePart):
                disposition += b'; filename="' + wire(value.filename) + b'"'
                parts.append(
                    b"Content-Disposition: "
                    + disposition
                    + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    + value.content
                )
            else:
                parts.append(b"Content-Disposition: " + disposition + b"\r\n\r\n" + wire(value))
        delimiter = b"--" + boundary.encode()
        body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
        content_type = f"multipart/form-data; boundary={boundary}"
    if rare(draw, 5):
        content_type += f"; charset={draw(st.sampled_from(CHARSETS))}"
    return {"Content-Type": content_type}, body, rare(draw, 4)


def query_string(draw: Any, pairs: list[tuple[str, str]]) -> str:
    shape = draw(st.sampled_from(["drawn"] * 12 + ["many fields", "long", "bad escapes"]))
    if shape == "many fields":
        return "?" + "&".join(f"f{i}=1" for i in range(1500))  # over DATA_UPLOAD_MAX_NUMBER_FIELDS
    if shape == "long":
        return "?queue_name=" + "q" * 20_000  # over Django's 16 KiB redirect limit
    if shape == "bad escapes":
        return "?queue_name=%zz%00%ff%c3"
    if not pairs:
        return ""
    return "?" + "&".join(f"{urllib.parse.quote(wire(k))}={urllib.parse.quote(wire(v))}" for k, v in pairs)


@dataclass
class World:
    """What the strategies aim at: both tenants' queues, callback URLs, submissions and keys."""

    lms_callback: str
    other_callbacks: list[str]
    other_submission_ids: list[int]
    other_keys: list[str]
    leased: list[tuple[int, str]] = field(default_factory=list)  # (id, key) handed to our grader
    file_paths: list[str] = field(default_factory=list)

    def queue_name(self, draw: Any) -> str:
        return str(mostly(draw, "fuzz-a", st.one_of(st.sampled_from(["fuzz-b", "nope"]), text)))


def method(draw: Any, usual: str) -> str:
    return str(mostly(draw, usual, st.sampled_from(METHODS), odds=4))


def role(draw: Any, usual: str) -> str:
    return str(mostly(draw, usual, st.sampled_from(["anonymous", "lms", "grader"]), odds=2))


def submit_request(draw: Any, world: World) -> tuple[Shaped, str]:
    # Many students (and repeats, so that some submissions supersede others).
    own = f"{world.lms_callback}/{draw(st.integers(0, 10**6))}"
    header: dict[str, Any] = {
        "lms_callback_url": mostly(draw, own, st.one_of(st.sampled_from(world.other_callbacks), text), odds=2),
        "lms_key": mostly(draw, "k", text),
        "queue_name": world.queue_name(draw),
    }
    if rare(draw, 5):
        del header[draw(st.sampled_from(list(header)))]
    if rare(draw, 3):
        header.update(draw(st.dictionaries(text, small_json, max_size=2)))
    header_value: str | FilePart = json_text(draw, header)
    body_value: str | FilePart = mostly(draw, '{"student_response": "42"}', text)
    if rare(draw, 9):
        header_value = FilePart("h.json", wire(str(header_value)))
    if rare(draw, 9):
        body_value = FilePart("b.txt", wire(str(body_value)))
    fields: list[tuple[str, str | FilePart]] = []
    if not rare(draw, 9):
        fields.append(("xqueue_header", header_value))
    if not rare(draw, 9):
        fields.append(("xqueue_body", body_value))
    for _ in range(draw(st.integers(0, 2))):
        name = mostly(draw, "answer.py", st.one_of(st.sampled_from(["a\x00.py", "\ud800", "../x", ""]), text))
        fields.append((name, FilePart(mostly(draw, "answer.py", text), draw(st.binary(max_size=64)))))
    headers, body, chunked = encode_form(draw, draw(st.permutations(fields)))
    return Shaped("submit", method(draw, "POST"), "/xqueue/submit/", headers, body, chunked), role(draw, "lms")


def put_result_request(draw: Any, world: World) -> tuple[Shaped, str]:
    pairs = world.leased or [(1, "k")]
    submission_id, key = draw(st.sampled_from(pairs))
    if rare(draw, 5):  # another tenant's submission, with its real lease key
        submission_id, key = world.other_submission_ids[0], world.other_keys[0]
    header: dict[str, Any] = {
        "submission_id": mostly(
            draw, submission_id, st.one_of(st.integers(), st.just(str(submission_id)), text, small_json)
        ),
        "submission_key": mostly(draw, key, st.one_of(text, small_json)),
    }
    if rare(draw, 7):
        del header[draw(st.sampled_from(list(header)))]
    reply = mostly(
        draw,
        '{"correct": true, "score": 1, "msg": "<p>ok</p>"}',
        st.one_of(st.builds(json.dumps, small_json), text),
    )
    fields: list[tuple[str, str | FilePart]] = [("xqueue_header", json_text(draw, header)), ("xqueue_body", reply)]
    if rare(draw, 9):
        at = draw(st.integers(0, 1))
        fields[at] = (fields[at][0], FilePart("x", b"x"))
    headers, body, chunked = encode_form(draw, draw(st.permutations(fields)))
    shaped = Shaped("put_result", method(draw, "POST"), "/xqueue/put_result/", headers, body, chunked)
    return shaped, role(draw, "grader")


def queue_request(endpoint: str) -> Callable[[Any, World], tuple[Shaped, str]]:
    def build(draw: Any, world: World) -> tuple[Shaped, str]:
        pairs = [] if rare(draw, 7) else [("queue_name", world.queue_name(draw))]
        if draw(st.booleans()):
            pairs.append(("block", "true"))
        if rare(draw, 3):
            pairs += draw(st.lists(st.tuples(st.sampled_from(["block", "queue_name", "x"]), text), max_size=2))
        path = f"/xqueue/{endpoint}/" + query_string(draw, pairs)
        return Shaped(endpoint, method(draw, "GET"), path), role(draw, "grader")

    return build


def login_request(draw: Any, world: World) -> tuple[Shaped, str]:
    username: str | FilePart = mostly(draw, "login-target", text, odds=1)
    password: str | FilePart = mostly(draw, TARGET_PASSWORD, text, odds=1)
    if rare(draw, 5):
        username = FilePart("u", b"login-target")
    if rare(draw, 5):
        password = FilePart("p", TARGET_PASSWORD.encode())
    fields = [pair for pair in [("username", username), ("password", password)] if not rare(draw, 6)]
    headers, body, chunked = encode_form(draw, fields)
    path = "/xqueue/login/" + query_string(draw, draw(st.lists(st.tuples(text, text), max_size=1)))
    shaped = Shaped("login", method(draw, "POST"), path, headers, body, chunked)
    return shaped, draw(st.sampled_from(["anonymous", "lms", "grader"]))


def plain_request(endpoint: str) -> Callable[[Any, World], tuple[Shaped, str]]:
    def build(draw: Any, world: World) -> tuple[Shaped, str]:
        path = f"/xqueue/{endpoint}" + draw(st.sampled_from(["/", ""]))
        path += query_string(draw, draw(st.lists(st.tuples(text, text), max_size=2)))
        headers: dict[str, str] = {}
        body = None
        if draw(st.booleans()):
            headers, body, _ = encode_form(draw, [("x", draw(text))])
        shaped = Shaped(endpoint, draw(st.sampled_from(METHODS)), path, headers, body)
        return shaped, draw(st.sampled_from(["anonymous", "lms", "grader"]))

    return build


def download_request(draw: Any, world: World) -> tuple[Shaped, str]:
    token = mostly(draw, st.sampled_from(world.file_paths or ["none"]), text, odds=2)
    if rare(draw, 3) and token:
        at = draw(st.integers(0, len(token) - 1))
        token = token[:at] + draw(st.sampled_from("aZ0:_-")) + token[at + 1 :]
    name = mostly(draw, "answer.py", text)
    path = "/xqueue/files/" + urllib.parse.quote(wire(token), safe=":") + "/" + urllib.parse.quote(wire(name))
    return Shaped("files", method(draw, "GET"), path), draw(st.sampled_from(["anonymous", "lms", "grader"]))


# --- The client -----------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    location: str
    body: bytes
    cookies: dict[str, str]


def send(base_url: str, shaped: Shaped, cookie: str = "") -> Reply:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = dict(shaped.headers)
    if cookie:
        headers["Cookie"] = cookie
    body: Any = shaped.body
    if shaped.chunked and body is not None:
        headers["Transfer-Encoding"] = "chunked"
        body = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    try:
        conn.request(shaped.method, shaped.path, body=body, headers=headers, encode_chunked=shaped.chunked)
        response = conn.getresponse()
        content = response.read()
        cookies = {}
        for line in response.msg.get_all("Set-Cookie") or []:
            name, _, value = line.split(";")[0].partition("=")
            cookies[name.strip()] = value
        return Reply(response.status, response.getheader("Location") or "", content, cookies)
    finally:
        conn.close()


def log_in(base_url: str, username: str, password: str) -> str:
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    shaped = Shaped("login", "POST", "/xqueue/login/", {"Content-Type": "application/x-www-form-urlencoded"}, body)
    reply = send(base_url, shaped)
    assert json.loads(reply.body) == {"return_code": 0, "content": "Logged in"}, reply.body
    return f"sessionid={reply.cookies['sessionid']}"


def envelope_of(reply: Reply) -> dict[str, Any]:
    value = json.loads(reply.body)
    assert isinstance(value, dict) and set(value) == {"return_code", "content"}, reply.body[:300]
    assert type(value["return_code"]) is int and value["return_code"] in (0, 1), value
    return value


# --- The suite ------------------------------------------------------------------------------------------


def fuzz_with(
    builder: Callable[[Any, World], tuple[Shaped, str]],
    examples: int,
    check: Callable[[Shaped, str], None],
    world: World,
) -> Callable[[], None]:
    """A Hypothesis test of ``examples`` requests from ``builder``, each sent as its drawn role and checked."""

    @hypothesis_settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data: Any) -> None:
        check(*builder(data.draw, world))

    return fuzz


@pytest.fixture(scope="module")
def fuzz_server(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    media = tmp_path_factory.mktemp("fuzz-media")
    # Leases outlast a long run's phases, so that the put_result phase can answer what get_submission leased.
    with running_server(str(media), GRADEQUEUE_LEASE_SECONDS="7200") as (base_url, _process):
        yield base_url, media


def stored_files(media: Path) -> int:
    return sum(1 for p in media.rglob("*") if p.is_file())


def snapshot(queue: Queue) -> list[tuple[Any, ...]]:
    """Everything about a tenant's submissions that anyone's request could change."""
    rows = Submission.objects.filter(queue=queue).order_by("pk")
    return [
        (s.pk, s.status, s.updated_at, s.lease_key, s.grader_reply, s.superseded_by_id, s.events.count()) for s in rows
    ]


def test_every_xqueue_endpoint_holds_under_hostile_requests(
    fuzz_server: tuple[str, Path], celery_worker_app: Any, fake_lms: FakeLMS, settings: Any, capsys: Any
) -> None:
    base_url, media = fuzz_server
    # The server checks passwords with the production hashers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    queue_a = Queue.objects.create(name="fuzz-a")
    queue_b = Queue.objects.create(name="fuzz-b")
    make_account("lms-a", LMS_PASSWORD, Role.LMS, queue_a)
    make_account("grader-a", GRADER_PASSWORD, Role.GRADER, queue_a)
    lms_b = make_account("lms-b", LMS_PASSWORD, Role.LMS, queue_b)
    grader_b = make_account("grader-b", GRADER_PASSWORD, Role.GRADER, queue_b)
    make_account("login-target", TARGET_PASSWORD, Role.LMS, queue_a)

    # The other tenant: two waiting submissions and one leased to its grader, on callbacks our LMS will reuse.
    other_callbacks = [fake_lms.callback_url() + f"/b/{i}" for i in range(3)]
    for url in other_callbacks:
        lifecycle.submit(
            lifecycle.NewSubmission(
                queue=queue_b,
                lms_header=json.dumps({"lms_callback_url": url, "lms_key": "b", "queue_name": "fuzz-b"}),
                lms_callback_url=url,
                lms_key="b",
                body="{}",
                files={},
            ),
            lms_b,
        )
    lease_b = lifecycle.lease_next(queue_b, grader_b)
    assert lease_b is not None
    other_before = snapshot(queue_b)

    roles = {
        "anonymous": "",
        "lms": log_in(base_url, "lms-a", LMS_PASSWORD),
        "grader": log_in(base_url, "grader-a", GRADER_PASSWORD),
    }
    # Kept apart for the last step: whatever the fuzzing does to the roles' sessions, these still work.
    pipeline_lms = log_in(base_url, "lms-a", LMS_PASSWORD)
    pipeline_grader = log_in(base_url, "grader-a", GRADER_PASSWORD)
    world = World(
        lms_callback=fake_lms.callback_url(),
        other_callbacks=other_callbacks,
        other_submission_ids=list(Submission.objects.filter(queue=queue_b).values_list("pk", flat=True)),
        other_keys=[lease_b.key],
    )
    # A submission with a file, leased to our grader: real download links and a real lease to aim at.
    seed = Shaped("submit", "POST", "/xqueue/submit/")
    boundary = "seed"
    seed_header = json.dumps({"lms_callback_url": world.lms_callback, "lms_key": "s", "queue_name": "fuzz-a"})
    seed.headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    seed.body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="xqueue_header"\r\n\r\n{seed_header}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="xqueue_body"\r\n\r\n{{}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="answer.py"; filename="answer.py"\r\n\r\n'
        f"print(1)\r\n--{boundary}--\r\n"
    ).encode()
    assert envelope_of(send(base_url, seed, roles["lms"]))["return_code"] == 0

    counts: Counter[str] = Counter()
    status_classes: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    def client_events() -> int:
        return SubmissionEvent.objects.filter(to_status__in=CLIENT_EVENTS).count()

    def check(shaped: Shaped, role: str) -> None:
        submissions, events, files = Submission.objects.count(), client_events(), stored_files(media)
        try:
            reply = send(base_url, shaped, roles[role])
        except (BrokenPipeError, ConnectionResetError):
            # Granian refuses a request line over 64 KiB before reading the body, and closes the connection:
            # a client still sending the body can see that instead of the 414.
            assert len(shaped.path) > HTTP_TARGET_LIMIT, shaped
            counts[shaped.endpoint] += 1
            outcomes[f"{shaped.endpoint} closed by the web server (request line over 64 KiB)"] += 1
            return
        counts[shaped.endpoint] += 1
        status_classes[f"{reply.status // 100}xx"] += 1
        assert reply.status < 500, (shaped, role, reply.status, reply.body[:300])
        refused = True
        if len(shaped.path) > HTTP_TARGET_LIMIT:
            # The web server's own limit, before the application: no XQueue client sends such a request line.
            assert reply.status in (200, 302, 414, 431), (shaped.endpoint, reply.status)
            outcomes[f"{shaped.endpoint} {reply.status} (request line over 64 KiB)"] += 1
        elif shaped.endpoint == "files":
            assert reply.status in (200, 403, 404, 410), (shaped, reply.status)
            outcomes[f"files {reply.status}"] += 1
        elif reply.status == 302:
            assert shaped.endpoint in PROTECTED, (shaped, role)
            assert reply.location.startswith(f"/xqueue/login/?next=/xqueue/{shaped.endpoint}"), reply.location
            outcomes[f"{shaped.endpoint} 302"] += 1
        else:
            assert reply.status == 200, (shaped, role, reply.status, reply.body[:300])
            if shaped.method == "HEAD":
                assert reply.body == b""
                outcomes[f"{shaped.endpoint} HEAD"] += 1
            else:
                value = envelope_of(reply)
                refused = value["return_code"] == 1
                outcomes[f"{shaped.endpoint} return_code {value['return_code']}"] += 1
                if not refused and shaped.endpoint == "get_submission":
                    content = json.loads(value["content"])
                    lease = json.loads(content["xqueue_header"])
                    world.leased.append((lease["submission_id"], lease["submission_key"]))
                    for url in json.loads(content["xqueue_files"]).values():
                        world.file_paths.append(urllib.parse.urlsplit(url).path.split("/")[3])
                if not refused and shaped.endpoint == "submit":
                    assert Submission.objects.count() == submissions + 1
                if shaped.endpoint == "logout" and role != "anonymous":
                    roles[role] = log_in(
                        base_url, *(("lms-a", LMS_PASSWORD) if role == "lms" else ("grader-a", GRADER_PASSWORD))
                    )
                if shaped.endpoint == "login" and not refused:
                    refused = True  # a login stores a session, never a submission
        if refused:
            assert (Submission.objects.count(), client_events(), stored_files(media)) == (submissions, events, files), (
                shaped,
                role,
                reply.body[:300],
            )
        assert snapshot(queue_b) == other_before, (shaped, role, reply.body[:300])

    builders: list[tuple[str, Callable[[Any, World], tuple[Shaped, str]], int]] = [
        ("status", plain_request("status"), EXAMPLES),
        ("submit", submit_request, EXAMPLES * 3),
        ("get_queuelen", queue_request("get_queuelen"), EXAMPLES),
        ("get_submission", queue_request("get_submission"), EXAMPLES),
        ("put_result", put_result_request, EXAMPLES * 2),
        ("files", download_request, EXAMPLES),
        # Last: a logout costs a fresh login (PBKDF2), and failed logins count towards the address's limit.
        ("logout", plain_request("logout"), max(3, EXAMPLES // 3)),
        ("login", login_request, max(3, EXAMPLES // 2)),
    ]
    for _name, builder, examples in builders:
        fuzz_with(builder, examples, lambda shaped, role: check(shaped, role), world)()

    # Afterwards: a normal submission still goes all the way to the LMS.
    header = json.dumps({"lms_callback_url": fake_lms.callback_url(), "lms_key": "after-fuzz", "queue_name": "fuzz-a"})
    form = urllib.parse.urlencode(
        {"xqueue_header": header, "xqueue_body": '{"student_response": "after-fuzz"}'}
    ).encode()
    submitted = Submission.objects.count()
    post = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (
        envelope_of(send(base_url, Shaped("submit", "POST", "/xqueue/submit/", post, form), pipeline_lms))[
            "return_code"
        ]
        == 0
    )
    assert Submission.objects.count() == submitted + 1
    grade = '{"correct": true, "score": 1, "msg": "<p>after</p>"}'
    deadline = time.monotonic() + 30
    answered = False
    while not answered:
        assert time.monotonic() < deadline, "the normal submission was never handed out"
        pulled = envelope_of(
            send(
                base_url, Shaped("get_submission", "GET", "/xqueue/get_submission/?queue_name=fuzz-a"), pipeline_grader
            )
        )
        assert pulled["return_code"] == 0, pulled
        content = json.loads(pulled["content"])
        reply = (
            grade
            if content["xqueue_body"] == '{"student_response": "after-fuzz"}'
            else '{"correct": false, "score": 0, "msg": ""}'
        )
        form = urllib.parse.urlencode({"xqueue_header": content["xqueue_header"], "xqueue_body": reply}).encode()
        put = Shaped("put_result", "POST", "/xqueue/put_result/", post, form)
        assert envelope_of(send(base_url, put, pipeline_grader)) == {"return_code": 0, "content": ""}
        answered = Submission.objects.filter(
            lms_key="after-fuzz", status__in=(Status.RETURNED, Status.GRADED, Status.DELIVERED)
        ).exists()

    def delivered() -> bool:
        return any(
            json.loads(cb.header).get("lms_key") == "after-fuzz" and cb.body == grade for cb in fake_lms.callbacks
        )

    deadline = time.monotonic() + 60
    while not delivered():
        assert time.monotonic() < deadline, "the normal submission's grade never reached the LMS"
        time.sleep(0.1)
    assert snapshot(queue_b) == other_before

    summary = {
        "database": django_settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "examples_per_endpoint_setting": EXAMPLES,
        "requests": dict(sorted(counts.items())),
        "total": sum(counts.values()),
        "5xx": status_classes["5xx"],
        "statuses": dict(sorted(status_classes.items())),
        "outcomes": dict(sorted(outcomes.items())),
    }
    if REPORT:
        Path(REPORT).write_text(json.dumps(summary, indent=2) + "\n")
    with capsys.disabled():
        print("\nfuzz:", json.dumps(summary))
