"""Posting grades to the LMS (PROTOCOL §6). The lifecycle decides what each outcome means."""

from __future__ import annotations

import logging
import time

import requests

from grading import lifecycle
from grading.conf import setting

logger = logging.getLogger("grading.delivery")

_session = requests.Session()


def deliver(submission_id: int) -> lifecycle.DeliveryOutcome | None:
    """Make the next delivery attempt for a graded (or failed) submission, if one is due and unclaimed."""
    claim = lifecycle.claim_delivery(submission_id)
    if claim is None:
        return None
    started = time.monotonic()
    http_status: int | None = None
    error = ""
    try:
        response = _session.post(
            claim.callback_url,
            data={"xqueue_header": claim.lms_header, "xqueue_body": claim.lms_body},
            timeout=float(setting("DELIVERY_TIMEOUT")),
            allow_redirects=False,
        )
        http_status = response.status_code
        response.close()
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = int((time.monotonic() - started) * 1000)
    outcome, retry_in = lifecycle.record_delivery(claim, http_status=http_status, error=error, duration_ms=duration_ms)
    logger.info(
        "delivery submission=%s attempt=%s http_status=%s outcome=%s retry_in=%s duration_ms=%s",
        submission_id,
        claim.attempt,
        http_status,
        outcome.value,
        retry_in,
        duration_ms,
        extra={
            "submission_id": submission_id,
            "queue": lifecycle.queue_name_of(submission_id),
            "attempt": claim.attempt,
            "http_status": http_status,
            "outcome": outcome.value,
            "retry_in": retry_in,
            "duration_ms": duration_ms,
        },
    )
    return outcome
