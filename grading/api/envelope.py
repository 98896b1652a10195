"""The XQueue reply envelope ``{"return_code": 0|1, "content": ...}``: built here and nowhere else."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


def encode(data: Any) -> bytes:
    """``json.dumps`` with its default separators, byte-for-byte what the reference server sends."""
    return json.dumps(data).encode("utf-8")


class XQueueRenderer(BaseRenderer):
    """``encode`` for DRF's own responses; the API's envelopes are rendered by ``ok`` and ``fail``."""

    media_type = "application/json"
    format = "json"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return encode(data)


class EnvelopeOnly(DefaultContentNegotiation):
    """Every XQueue reply is the JSON envelope, whatever the client's Accept header says (as the reference
    server): no negotiation to do, and parsing Accept headers was a tenth of DRF's time per request."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


def envelope(success: bool, content: Any) -> dict[str, Any]:
    return {"return_code": 0 if success else 1, "content": content}


CONTENT_TYPE = f"{XQueueRenderer.media_type}; charset={XQueueRenderer.charset}"


def _reply(success: bool, content: Any) -> HttpResponse:
    # Rendered here, as XQueueRenderer would: a plain response skips DRF's rendering machinery.
    return HttpResponse(encode(envelope(success, content)), content_type=CONTENT_TYPE)


def ok(content: Any) -> HttpResponse:
    """HTTP 200, return_code 0."""
    return _reply(True, content)


def fail(content: Any) -> HttpResponse:
    """HTTP 200, return_code 1: clients read the envelope; a 4xx/5xx would be taken for a broken server."""
    return _reply(False, content)
