"""Middleware of our own."""

from __future__ import annotations

from typing import Any

from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.db import InterfaceError, OperationalError

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
        except (OperationalError, InterfaceError) as exc:
            if not request.path_info.startswith(API_PREFIX):
                raise
            from grading import outage
            from grading.api.envelope import fail
            from grading.api.views import DATABASE_UNAVAILABLE

            outage.database.failed(exc)
            return fail(DATABASE_UNAVAILABLE)
