"""Request bodies of the JSON API: JSON that a hostile client cannot turn into a 500."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, but nesting too deep for the parser (``[[[[...``) or a number too long to convert
    is a 400 like any other malformed body, not a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) if stream is not None else b""
        if len(raw) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise ParseError(f"The body is too large (limit {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes).")
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"The body is not valid JSON ({type(exc).__name__}).") from None
