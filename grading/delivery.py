"""Posting grades to the LMS (PROTOCOL §6). The lifecycle decides what each outcome means."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from grading import lifecycle
from grading.conf import setting

logger = logging.getLogger("grading.delivery")

# Up to this many POSTs of one scoring run are in flight at once (a slow LMS then costs a run its slowest
# POST per round, not the sum of them).
POST_CONCURRENCY = 8

_session = requests.Session()
_adapter = HTTPAdapter(pool_connections=POST_CONCURRENCY, pool_maxsize=POST_CONCURRENCY * 2)
_session.mount("http://", _adapter)
_session.mount("https://", _adapter)
# requests reads the environment on every call (every variable, for proxies; REQUESTS_CA_BUNDLE; .netrc),
# which was a fifth of a worker's CPU per grade. Here the CA bundle is read per call (two look-ups) and the
# proxies once per LMS address and proxy setting (_proxies). Credentials in a callback URL still apply;
# .netrc files do not.
_session.trust_env = False
_PROXY_VARIABLES = tuple(
    name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for name in (base, base.upper())
)


@functools.lru_cache(maxsize=1024)
def _proxies_for(origin: str, _setting: tuple[str | None, ...]) -> dict[str, str]:
    return dict(get_environ_proxies(origin))


def _proxies(url: str) -> dict[str, str]:
    """The proxies that HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY (either case) set for ``url``."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"
    return _proxies_for(origin, tuple(os.environ.get(name) for name in _PROXY_VARIABLES))


def _verify() -> str | bool:
    """Verify TLS certificates, against REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) when set, as requests does."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _post_pool() -> ThreadPoolExecutor:
    """The process's POST threads (made anew in a forked child, where the parent's threads do not exist)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=POST_CONCURRENCY, thread_name_prefix="gradequeue-post")
            _pool_pid = os.getpid()
        return _pool


def deliver(submission_id: int) -> lifecycle.DeliveryOutcome | None:
    """Make the next delivery attempt for a graded (or failed) submission, if one is due and unclaimed."""
    claim = lifecycle.claim_delivery(submission_id)
    if claim is None:
        return None
    return send(claim)


def _post(claim: lifecycle.DeliveryClaim) -> tuple[int | None, str, int]:
    """One POST of a grade to its LMS callback: (HTTP status or None, error text, duration in ms)."""
    started = time.monotonic()
    http_status: int | None = None
    error = ""
    try:
        response = _session.post(
            claim.callback_url,
            data={"xqueue_header": claim.lms_header, "xqueue_body": claim.lms_body},
            timeout=float(setting("DELIVERY_TIMEOUT")),
            allow_redirects=False,
            proxies=_proxies(claim.callback_url),
            verify=_verify(),
        )
        http_status = response.status_code
        response.close()
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    return http_status, error, int((time.monotonic() - started) * 1000)


def _log(
    claim: lifecycle.DeliveryClaim,
    http_status: int | None,
    outcome: lifecycle.DeliveryOutcome,
    retry_in: float | None,
    duration_ms: int,
) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    logger.info(
        "delivery submission=%s attempt=%s http_status=%s outcome=%s retry_in=%s duration_ms=%s",
        claim.submission_id,
        claim.attempt,
        http_status,
        outcome.value,
        retry_in,
        duration_ms,
        extra={
            "submission_id": claim.submission_id,
            "queue": claim.queue or lifecycle.queue_name_of(claim.submission_id),
            "attempt": claim.attempt,
            "http_status": http_status,
            "outcome": outcome.value,
            "retry_in": retry_in,
            "duration_ms": duration_ms,
        },
    )


def send(claim: lifecycle.DeliveryClaim) -> lifecycle.DeliveryOutcome:
    """POST the grade ``claim`` holds the right to deliver, and record what the LMS answered."""
    http_status, error, duration_ms = _post(claim)
    outcome, retry_in = lifecycle.record_delivery(claim, http_status=http_status, error=error, duration_ms=duration_ms)
    _log(claim, http_status, outcome, retry_in, duration_ms)
    return outcome


def send_many(claims: list[lifecycle.DeliveryClaim]) -> list[lifecycle.DeliveryOutcome]:
    """POST many claimed grades, several at a time, then record the outcomes (from this thread: the
    database connection is the caller's)."""
    if len(claims) == 1:
        return [send(claims[0])]
    results = list(_post_pool().map(_post, claims))
    outcomes = lifecycle.record_deliveries([(c, *r) for c, r in zip(claims, results, strict=True)])
    for claim, (http_status, _error, duration_ms), outcome in zip(claims, results, outcomes, strict=True):
        _log(claim, http_status, outcome, None, duration_ms)
    return outcomes


# A batch's POSTs must fit in this many seconds even when the LMS answers slowly (well within the task's time
# limit): this bounds the batch size.
RUN_SECONDS = 60.0
# A run starts no new batch after this many seconds: it hands over to a new run, whose message queues behind
# whatever else the workers have to do (a worker with a single process still reclaims leases on time).
TURN_SECONDS = 10.0


def score_and_deliver_returned(*, batch: int | None = None) -> dict[str, int]:
    """A scoring run: score every returned reply waiting, and post each usable grade to its LMS.

    With a shared cache the run holds the scoring bell while it works (grading.lifecycle, "Scoring runs"):
    replies committed meanwhile send no task message, and the run reads again after each batch, so under a
    steady stream of replies one run keeps going instead of one run (and one message) per few replies. It
    stops only after it has released the bell and then found nothing. Without a shared cache every reply
    sends a run, and a run stops at its first batch that comes back short. After TURN_SECONDS it hands over
    to a new run.
    """
    # A batch's POSTs take at most (batch / POST_CONCURRENCY) x DELIVERY_TIMEOUT: keep that within RUN_SECONDS.
    rounds = max(1, int(RUN_SECONDS // float(setting("DELIVERY_TIMEOUT"))))
    batch = batch or min(int(setting("SCORE_BATCH")), POST_CONCURRENCY * rounds)
    started = held_at = time.monotonic()
    holding = lifecycle.hold_scoring_bell()
    counts = {"taken": 0, "graded": 0, "delivered": 0}
    while True:
        taken, claims = lifecycle.score_returned_batch(batch)
        counts["taken"] += taken
        counts["graded"] += len(claims)
        if claims:
            outcomes = send_many(claims)
            counts["delivered"] += sum(o is lifecycle.DeliveryOutcome.DELIVERED for o in outcomes)
        if taken < batch:
            if not holding:
                # Nothing left unlocked when read, and any reply committed since then rang for a run.
                return counts
            if taken == 0:
                # Replies committed while the bell was held sent nothing: release it, then read once more.
                lifecycle.clear_scoring_bell()
                holding = False
        now = time.monotonic()
        if now - started > TURN_SECONDS:
            break
        if holding and now - held_at > lifecycle.SCORE_BELL_SECONDS / 2:
            holding, held_at = lifecycle.hold_scoring_bell(), now
    lifecycle.request_scoring(force=True)
    return counts
