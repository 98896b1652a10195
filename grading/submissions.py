"""Accepting a submission: the callback allow-list, the file limits, storing the files, and the lifecycle's
``submit``, in that order, with the files removed again if the submission is not recorded. One function
for both ways in: the XQueue ``submit`` endpoint and the JSON API's ``POST /api/v1/submissions/``."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile

from grading import callbacks, files, headers, lifecycle
from grading.models import Queue, Submission


class Refused(Exception):
    """The submission was refused before anything was stored; the message says why, for the client."""


def accept(
    *,
    queue: Queue,
    user: Any,
    header: headers.LmsHeader,
    body: str,
    uploads: dict[str, UploadedFile],
    upload_count: int | None = None,
) -> tuple[Submission, int]:
    """Record a new submission of ``user`` in ``queue`` under ``header``; returns it and the queue's length after it.

    ``uploads`` maps each file's name to its upload (``upload_count``: how many file parts arrived, which
    may be more than the names). Raises Refused with the client's message for a callback URL off the
    allow-list or files over the limits.
    """
    refused = callbacks.refusal(header.lms_callback_url)
    if refused:
        raise Refused(refused)
    try:
        files.check_limits(uploads.values(), count=upload_count)
    except files.FileLimitError as exc:
        raise Refused(str(exc)) from None
    stored = files.store(uploads) if uploads else {}
    new = lifecycle.NewSubmission(
        queue=queue,
        lms_header=header.text,
        lms_callback_url=header.lms_callback_url,
        lms_key=header.lms_key,
        body=body,
        files=stored,
    )
    try:
        return lifecycle.submit(new, user)
    except Exception:
        files.delete(stored.values())
        raise
