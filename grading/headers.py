"""The XQueue header (``xqueue_header``), parsed in one place for every way in.

An LMS's header (submit, and rows imported from an xqueue database) is a JSON object with at least
``lms_callback_url`` and ``queue_name`` (non-empty strings) and ``lms_key`` (any JSON value, kept as text).
A grader's header (put_result) carries ``submission_id`` and ``submission_key``, as get_submission wrote
them. JSON is parsed with its nesting bounded by the interpreter: a header too deep to parse is an invalid
header, not a crash. Keys and string values at any depth follow ``grading.text``'s character rule.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from grading import text

FIELD = "xqueue_header"
_DECIMAL = re.compile(r"[0-9]{1,18}")


class Invalid(Exception):
    """The header is not one; ``str(exc)`` says why ("is not JSON", "lacks ...")."""


@dataclass(frozen=True)
class LmsHeader:
    """An LMS's header; ``text`` is the header as sent, which is stored and posted back with the grade."""

    text: str
    queue_name: str
    lms_callback_url: str
    lms_key: str


@dataclass(frozen=True)
class GraderHeader:
    submission_id: int
    submission_key: str


def _json_object(header: str) -> dict[str, Any]:
    try:
        value = json.loads(header)
    except (ValueError, RecursionError):
        # ValueError also covers an integer of more digits than Python converts.
        raise Invalid("is not JSON") from None
    if not isinstance(value, dict):
        raise Invalid("is not a JSON object")
    text.check_json_strings(FIELD, value)
    return value


def lms_header(header: str) -> LmsHeader:
    """An LMS's ``xqueue_header``. Raises Invalid, or ``text.Refused`` for a refused character."""
    value = _json_object(header)
    if (
        not all(isinstance(value.get(k), str) and value.get(k) for k in ("lms_callback_url", "queue_name"))
        or "lms_key" not in value
    ):
        raise Invalid("lacks lms_callback_url, lms_key or queue_name")
    return LmsHeader(
        text=header,
        queue_name=value["queue_name"],
        lms_callback_url=value["lms_callback_url"],
        lms_key=str(value["lms_key"]),
    )


def new_lms_header(
    queue_name: str, lms_callback_url: str, lms_key: str, extra: dict[str, Any] | None = None
) -> LmsHeader:
    """The header of a submission made without one (the JSON API): ``extra`` keys, then the three fields."""
    value = {**(extra or {}), "lms_callback_url": lms_callback_url, "lms_key": lms_key, "queue_name": queue_name}
    return LmsHeader(text=json.dumps(value), queue_name=queue_name, lms_callback_url=lms_callback_url, lms_key=lms_key)


def grader_header(header: str) -> GraderHeader:
    """A grader's ``xqueue_header`` (put_result). Raises Invalid, or ``text.Refused`` for a refused character."""
    value = _json_object(header)
    pk = submission_id(value.get("submission_id"))
    key = value.get("submission_key")
    if pk is None or not isinstance(key, str) or not key:
        raise Invalid("lacks submission_id or submission_key")
    return GraderHeader(submission_id=pk, submission_key=key)


def grader_header_text(submission_id: int, submission_key: str) -> str:
    """The ``xqueue_header`` get_submission hands a grader, which it sends back with its reply."""
    return json.dumps({"submission_id": submission_id, "submission_key": submission_key})


def submission_id(value: Any) -> int | None:
    """A submission id from a grader's header: a JSON integer or ASCII decimal text, else None.

    ``str.isdigit`` accepts ``²`` and ``①``, which ``int()`` refuses, and 5 000 digits exceed the interpreter's
    conversion limit; neither can name a submission.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 2**62 else None
    if isinstance(value, str):
        digits = value.strip(" \t\r\n")
        if _DECIMAL.fullmatch(digits):
            return int(digits)
    return None
