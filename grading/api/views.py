"""The XQueue HTTP API. Thin: parse and validate, one call into ``grading``, build the envelope.

The wire contract, including the real clients' quirks, is ../shared/PROTOCOL.md of the project's steering
documents; every reply text here is taken from it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import login, logout
from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.core.exceptions import DisallowedRedirect, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.storage import default_storage
from django.db import DatabaseError
from django.http import FileResponse, HttpResponse
from django.middleware.csrf import get_token
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, ParseError, UnsupportedMediaType
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from grading import access, files, headers, lifecycle, logins, longpoll, outage, submissions, text, throttle
from grading.api import inputs
from grading.api.envelope import fail, ok
from grading.conf import setting
from grading.models import QueueMode, Role

LOGIN_URL = "/xqueue/login/"
# What a client is told when the database fails under a call (a restart, a dropped connection): the failure
# envelope, which every client takes as "try again later" (a 500 would be "server broken").
DATABASE_UNAVAILABLE = "Service temporarily unavailable; try again"

logger = logging.getLogger("grading.api")


class XQueueView(APIView):
    """Common ground: 302 to the login page when not logged in, envelopes for every other problem."""

    not_allowed_message = "Unsupported method"
    # Views that need the database: a reply of theirs without a database error ends a database outage.
    uses_database = True

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, outage.DATABASE_CONNECTION_ERRORS):
            self._database_failed = True
            outage.database.failed(exc)
            return fail(DATABASE_UNAVAILABLE)
        if isinstance(exc, DatabaseError):
            # The database refused something about this request: its own failure, not an outage.
            logger.error("database refused %s %s", self.request.method, self.request.path, exc_info=exc)
            return fail("Request could not be processed")
        if isinstance(exc, NotAuthenticated | AuthenticationFailed):
            return login_redirect(self.request)
        if isinstance(exc, text.Refused):
            return fail(str(exc))
        if isinstance(exc, RequestDataTooBig):
            return fail(f"Request too large (limit {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)")
        if isinstance(exc, TooManyFilesSent):
            return fail(files.too_many_files_message())
        if isinstance(exc, TooManyFieldsSent | ParseError | UnsupportedMediaType):
            return fail("Request could not be parsed")
        return super().handle_exception(exc)

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        if self.uses_database and not getattr(self, "_database_failed", False):
            outage.database.succeeded()
        return super().finalize_response(request, response, *args, **kwargs)

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        with longpoll.in_progress():  # a waiting get_submission gives its thread back when they run out
            return super().dispatch(request, *args, **kwargs)

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        return fail(self.not_allowed_message)

    def options(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.http_method_not_allowed(request)


def login_redirect(request: Any) -> HttpResponse:
    """The protocol's 302 to the login page, ``next`` carrying the path and its query string.

    Django refuses to redirect to a URL over 16 KiB; a longer query string is left out of ``next`` (clients
    only follow the redirect to read ``login_required``, log in and send their request again).
    """
    try:
        return redirect_to_login(request.get_full_path(), LOGIN_URL)
    except DisallowedRedirect:
        return redirect_to_login(request.path, LOGIN_URL)


def _content_length(request: Request) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def _form(request: Request) -> Any:
    """The form fields. Reading them here turns an oversized body into the envelope, not a 400."""
    return request.data


@method_decorator(csrf_exempt, name="dispatch")
class LoginView(XQueueView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def get(self, request: Request) -> HttpResponse:
        # 2026 watchers read the csrftoken cookie from this GET before they log in.
        get_token(request._request)
        return fail("login_required")

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.get(request)

    def post(self, request: Request) -> HttpResponse:
        data = _form(request)
        # A credential sent as a file part is a missing credential; NUL and lone surrogates are refused.
        username, password = inputs.form_text(data, "username"), inputs.form_text(data, "password")
        if not username or not password:
            return fail("Insufficient login info")
        outcome = logins.check(username, password, throttle.client_address(request._request))
        if outcome.wait:
            return fail(throttle.message(outcome.wait))
        if outcome.user is None:
            return fail("Incorrect login credentials")
        login(request._request, outcome.user)
        return ok("Logged in")


@method_decorator(csrf_exempt, name="dispatch")
class LogoutView(XQueueView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        logout(request._request)
        return ok("Goodbye")

    get = post = http_method_not_allowed


class StatusView(XQueueView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    uses_database = False

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        return ok("OK")

    get = http_method_not_allowed


class SubmitView(XQueueView):
    not_allowed_message = "Queue requests should use HTTP POST"

    def post(self, request: Request) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + int(setting("MAX_FILES")) * int(setting("MAX_FILE_BYTES"))
        if _content_length(request) > limit:
            return fail(f"Request too large (limit {limit} bytes)")
        data = _form(request)
        header_text, body = inputs.form_text(data, "xqueue_header"), inputs.form_text(data, "xqueue_body")
        if header_text is None or body is None:
            return fail("Queue request has invalid format")
        try:
            header = headers.lms_header(header_text)
        except headers.Invalid:
            return fail("Queue request has invalid format")
        for field_name in request.FILES:
            text.check_text("A file part's name", field_name)
        queue_name = header.queue_name
        queue = access.queue_for(request.user, queue_name, Role.LMS)
        if queue is None:
            return fail(f"Queue '{queue_name}' not found")
        try:
            _submission, length = submissions.accept(
                queue=queue,
                user=request.user,
                header=header,
                body=body,
                uploads=dict(request.FILES.items()),
                upload_count=sum(len(parts) for _, parts in request.FILES.lists()),
            )
        except submissions.Refused as exc:
            return fail(str(exc))
        return ok(str(length))


def _queue_name(request: Request, endpoint: str) -> tuple[str, HttpResponse | None]:
    name = inputs.form_text(request.query_params, "queue_name") or ""
    if not name:
        return "", fail(f"'{endpoint}' must provide parameter 'queue_name'")
    return name, None


class GetQueueLenView(XQueueView):
    def get(self, request: Request) -> HttpResponse:
        name, error = _queue_name(request, "get_queuelen")
        if error:
            return error
        queue = access.queue_for(request.user, name)
        if queue is None:
            return fail("Valid queue names are: " + ", ".join(access.queue_names(request.user)))
        return ok(lifecycle.queue_length(queue.pk))

    post = get


class GetSubmissionView(XQueueView):
    def head(self, request: Request) -> HttpResponse:
        # Django answers HEAD with GET; here that would lease a submission whose reply nobody reads.
        return fail("Unsupported method")

    def get(self, request: Request) -> HttpResponse:
        name, error = _queue_name(request, "get_submission")
        if error:
            return error
        queue = access.queue_for(request.user, name, Role.GRADER)
        if queue is None:
            return fail(f"Queue '{name}' not found")
        if queue.mode != QueueMode.PULL:
            # Its dispatcher hands work out (within the queue's in-flight cap): nothing here to pull.
            return fail(f"Queue '{name}' is empty")
        lease = longpoll.lease(queue, request.user)
        if lease is None:
            return fail(f"Queue '{name}' is empty")
        links = {}
        if lease.files:
            links = files.urls_for(lease.files, setting("PUBLIC_BASE_URL") or request.build_absolute_uri("/"))
        return ok(
            json.dumps(
                {
                    "xqueue_header": headers.grader_header_text(lease.submission_id, lease.key),
                    "xqueue_body": lease.body,
                    "xqueue_files": json.dumps(links),
                }
            )
        )

    post = get


class PutResultView(XQueueView):
    not_allowed_message = "'put_result' must use HTTP POST"

    def post(self, request: Request) -> HttpResponse:
        data = _form(request)
        header_text, reply = inputs.form_text(data, "xqueue_header"), inputs.form_text(data, "xqueue_body")
        if header_text is None or reply is None:
            return fail("Incorrect reply format")
        try:
            header = headers.grader_header(header_text)
        except headers.Invalid:
            return fail("Incorrect reply format")
        outcome = lifecycle.accept_result(
            header.submission_id,
            header.submission_key,
            reply,
            request.user,
            access.queue_ids(request.user, Role.GRADER),
        )
        if outcome is lifecycle.ResultOutcome.NO_SUCH_SUBMISSION:
            return fail("Submission does not exist")
        if outcome is lifecycle.ResultOutcome.WRONG_KEY:
            return fail("Incorrect key for submission")
        return ok("")


def download(request: Any, token: str, name: str) -> HttpResponse | FileResponse:
    """Serve a stored submission file to whoever holds a valid, unexpired link (graders)."""
    try:
        path = files.path_from_token(token)
    except signing.SignatureExpired:
        return HttpResponse("This download link has expired.\n", status=410, content_type="text/plain")
    except signing.BadSignature:
        return HttpResponse("This download link is not valid.\n", status=403, content_type="text/plain")
    if not default_storage.exists(path):
        return HttpResponse("This file no longer exists.\n", status=404, content_type="text/plain")
    # Always a download, never rendered: a student's file must not run as a page on this origin.
    response = FileResponse(
        default_storage.open(path, "rb"), as_attachment=True, filename=name, content_type="application/octet-stream"
    )
    response["Cache-Control"] = "private, no-store"
    return response
