"""Middleware of our own."""

from __future__ import annotations

from typing import Any

from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware

API_PREFIX = "/xqueue/"


class MessageMiddleware(DjangoMessageMiddleware):
    """Django's messages (the admin's notices), skipped on the XQueue API: its clients are programs that are
    never shown a message, and setting up the message store (cookie and session back-ends) on each of their
    requests was pure cost."""

    def process_request(self, request: Any) -> None:
        if request.path_info.startswith(API_PREFIX):
            return
        super().process_request(request)
