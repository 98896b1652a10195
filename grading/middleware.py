"""Middleware of our own, and the WSGI wrapper in front of Django (charsets, chunked request bodies)."""

from __future__ import annotations

import codecs
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import TooManyFieldsSent
from django.utils.http import parse_header_parameters

from grading import outage
from grading.api.envelope import CONTENT_TYPE, encode, envelope
from grading.conf import setting

API_PREFIX = "/xqueue/"


class MessageMiddleware(DjangoMessageMiddleware):
    """Django's messages (the admin's notices), skipped on the XQueue API: its clients are programs that are
    never shown a message, and setting up the message store (cookie and session back-ends) on each of their
    requests was pure cost."""

    def process_request(self, request: Any) -> None:
        if request.path_info.startswith(API_PREFIX):
            return
        super().process_request(request)


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's, except on the XQueue API, whose clients understand nothing but the envelope:

    - a session that cannot be saved after the view (the database failed under it, or a concurrent logout
      deleted it: Django's SessionInterrupted, a 400) leaves the view's reply as it was, without a new cookie;
    - a database error while saving it (outside the view's error handling) answers the failure envelope
      instead of a 500.
    """

    def process_response(self, request: Any, response: Any) -> Any:
        try:
            return super().process_response(request, response)
        except SessionInterrupted:
            if not request.path_info.startswith(API_PREFIX):
                raise
            return response
        except outage.DATABASE_CONNECTION_ERRORS as exc:
            if not request.path_info.startswith(API_PREFIX):
                raise
            from grading.api.envelope import fail
            from grading.api.views import DATABASE_UNAVAILABLE

            outage.database.failed(exc)
            return fail(DATABASE_UNAVAILABLE)


# Every byte value, and the bytes of a split UTF-8 sequence: a charset must decode all of them (errors
# replaced) for Django to be able to decode a query string or a form with it.
_CHARSET_PROBE = bytes(range(256)) + b"\xe2\x82"
_charset_verdicts: dict[str, bool] = {}


def _decodes_text(charset: str) -> bool:
    verdict = _charset_verdicts.get(charset)
    if verdict is None:
        try:
            _CHARSET_PROBE.decode(charset, "replace")
            b"".decode(charset, "replace")
            verdict = True
        except Exception:  # LookupError for rot13/base64/zlib, UnicodeError for idna and "undefined", ...
            verdict = False
        if len(_charset_verdicts) < 256:
            _charset_verdicts[charset] = verdict
    return verdict


def charset_refusal(environ: dict[str, Any]) -> str | None:
    """Why the request's Content-Type charset cannot be used (a message), or None.

    Django takes any name ``codecs.lookup`` knows (``rot13``, ``base64``, ``zlib_codec``) as the request's
    encoding and decodes the query string with it while it builds the request, before any middleware runs:
    a 500 on any URL. A charset Python does not know at all is ignored, as Django ignores it.
    """
    content_type = environ.get("CONTENT_TYPE", "")
    if "charset" not in content_type.lower():
        return None
    _, params = parse_header_parameters(content_type)
    charset = params.get("charset")
    if not charset:
        return None
    try:
        codecs.lookup(charset)
    except LookupError:
        return None
    if _decodes_text(charset):
        return None
    return f"Unsupported charset '{charset[:40]}'"


# --- Chunked request bodies ------------------------------------------------------------------------------

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_READ_STEP = 64 * 1024


_DRAIN_LIMIT = 1024 * 1024


def _drain(source: Any) -> None:
    """Read (and drop) up to 1 MiB of a refused request's body: a client still sending it would otherwise see
    the connection close under it instead of the reply."""
    left = _DRAIN_LIMIT
    while left > 0:
        block = source.read(min(_READ_STEP, left))
        if not block:
            return
        left -= len(block)


def largest_body() -> int:
    """The largest request body any endpoint takes: a submission's form fields plus its files."""
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + int(setting("MAX_FILES")) * int(setting("MAX_FILE_BYTES"))


def _refuse(environ: dict[str, Any], start_response: Callable[..., Any], message: str) -> list[bytes]:
    """The failure envelope on the XQueue API, a plain-text 400 elsewhere."""
    _drain(environ["wsgi.input"])
    if environ.get("PATH_INFO", "").startswith(API_PREFIX):
        body = encode(envelope(False, message))
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
    else:
        body = (message + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        start_response("400 Bad Request", headers)
    return [body]


def _call(app: WSGIApp, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    try:
        return app(environ, start_response)
    except TooManyFieldsSent:
        # Raised while Django builds its request, before any middleware could answer: a Content-Type with a
        # charset makes Django parse the query string there, and over 1 000 fields is refused.
        return _refuse(environ, start_response, "Request could not be parsed")


def edge(app: WSGIApp) -> WSGIApp:
    """``app``, behind the checks that must happen before Django builds its request object.

    A charset that is a codec but not a text encoding is refused, and so is a query string over
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` fields that Django parses while building the request: with the XQueue
    envelope on the API, a plain 400 elsewhere.

    A chunked request body (no Content-Length) is read before Django sees the request. WSGI servers pass such
    a body without a length and Django reads ``CONTENT_LENGTH`` bytes, so the body was taken for empty (a login
    then got "Insufficient login info"). It is read here, into memory up to 1 MiB and a temporary file beyond,
    up to one byte more than ``largest_body()``: a longer body is left unread and given a length over every
    limit, so the endpoint refuses it as too large with the envelope. The spool is closed once the view has run.
    """

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        refused = charset_refusal(environ)
        if refused is not None:
            return _refuse(environ, start_response, refused)
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not environ.get("CONTENT_LENGTH"):
            cap = largest_body() + 1
            with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
                size = 0
                source = environ["wsgi.input"]
                while size < cap:
                    block = source.read(min(_READ_STEP, cap - size))
                    if not block:
                        break
                    spool.write(block)
                    size += len(block)
                spool.seek(0)
                environ["wsgi.input"] = spool
                environ["CONTENT_LENGTH"] = str(size)
                # Django runs the whole view inside this call; only a streamed reply (a file download, which
                # reads no request body) is still to be sent when it returns.
                return _call(app, environ, start_response)
        return _call(app, environ, start_response)

    return application
