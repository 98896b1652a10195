"""Posting grades to the LMS (PROTOCOL §6). The lifecycle decides what each outcome means."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import certifi
import urllib3
from django.db import connection
from requests.utils import get_environ_proxies

from grading import lifecycle, outage, scoring_signal
from grading.conf import setting

logger = logging.getLogger("grading.delivery")

# Up to this many POSTs of one scoring run are in flight at once (a slow LMS then costs a run its slowest
# POST per round, not the sum of them).
POST_CONCURRENCY = 8

# Grades are posted with urllib3, the connection layer under requests, without requests itself: requests
# rebuilt its whole request pipeline (hooks, cookie jar, environment merging) on every POST, and a POST cost
# the worker twice the CPU (BENCHMARKS.md). What requests did that matters here is kept: keep-alive pools,
# verified TLS (certifi's bundle, or REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, read on every call), proxies from
# HTTP(S)_PROXY / ALL_PROXY / NO_PROXY (looked up once per LMS address and proxy setting), credentials in the
# callback or proxy URL, no redirects followed, no retries. .netrc files are not read.
_PROXY_VARIABLES = tuple(
    name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for name in (base, base.upper())
)
_NO_RETRIES = urllib3.Retry(0, read=False, redirect=False)
_FORM = "application/x-www-form-urlencoded"


@functools.lru_cache(maxsize=1024)
def _proxy_for(origin: str, _setting: tuple[str | None, ...]) -> str | None:
    proxies = get_environ_proxies(origin)
    scheme = urlsplit(origin).scheme
    return proxies.get(scheme) or proxies.get("all")


def _proxy(url: str) -> str | None:
    """The proxy that HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY (either case) set for ``url`` (a URL
    without credentials, as ``_post`` passes it), if any."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}/"
    return _proxy_for(origin, tuple(os.environ.get(name) for name in _PROXY_VARIABLES))


def _ca_bundle() -> str:
    """Verify TLS certificates against REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) when set, as requests does."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


_managers: dict[tuple[str | None, str, int], urllib3.PoolManager] = {}
_managers_lock = threading.Lock()


def _manager(proxy: str | None, ca_bundle: str) -> urllib3.PoolManager:
    """The process's connection pools for this proxy and CA bundle (made anew in a forked child)."""
    key = (proxy, ca_bundle, os.getpid())
    manager = _managers.get(key)
    if manager is None:
        with _managers_lock:
            manager = _managers.get(key)
            if manager is None:
                options: dict[str, Any] = {
                    "num_pools": 64,
                    "maxsize": POST_CONCURRENCY,
                    "cert_reqs": "CERT_REQUIRED",
                    "ca_certs": ca_bundle,
                }
                if proxy:
                    credentials = _credentials(proxy)
                    headers = urllib3.make_headers(proxy_basic_auth=credentials) if credentials else None
                    manager = urllib3.ProxyManager(proxy, proxy_headers=headers, **options)
                else:
                    manager = urllib3.PoolManager(**options)
                _managers[key] = manager
    return manager


def _credentials(url: str) -> str | None:
    """ "user:password" from a URL's user information (percent-decoded, as requests does), or None."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return f"{unquote(parts.username)}:{unquote(parts.password or '')}"


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
    """One POST of a grade to its LMS callback: (HTTP status or None, error text, duration in ms).

    Network errors and timeouts come back as (None, the error): the LMS may or may not have the grade, and
    it is tried again. Anything else raises (the POST could not be made of this claim): the caller fails
    that submission alone (``lifecycle.fail_delivery``).
    """
    started = time.monotonic()
    http_status: int | None = None
    error = ""
    url = claim.callback_url
    # The same key on every POST of this grade, so that any LMS can recognise a repeat (the syntax of the
    # IETF httpapi Idempotency-Key draft: a structured-field string).
    headers = {"Content-Type": _FORM, "Idempotency-Key": f'"{claim.idempotency_key}"'}
    credentials = _credentials(url)
    if credentials:
        # Sent as a header, and left out of the URL (which a proxy would see whole).
        headers.update(urllib3.make_headers(basic_auth=credentials))
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    timeout = float(setting("DELIVERY_TIMEOUT"))
    body = urlencode({"xqueue_header": claim.lms_header, "xqueue_body": claim.lms_body})
    try:
        response = _manager(_proxy(url), _ca_bundle()).request(
            "POST",
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=_NO_RETRIES,
            redirect=False,
        )
        http_status = response.status
    except (urllib3.exceptions.HTTPError, ValueError, OSError) as exc:
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
    return send_many([claim])[0]


def send_many(claims: list[lifecycle.DeliveryClaim]) -> list[lifecycle.DeliveryOutcome]:
    """POST claimed grades, POST_CONCURRENCY at a time, and record each outcome as soon as its POST returns.

    The POSTs run in the process's POST threads; this thread (the database connection is its own) waits for
    them and records the answers as they come in: those that came back together in one go (one statement
    when they were delivered), each of them as soon as it returns, not at the end of the batch.

    A claim is never taken over while its POST is outstanding, however long that POST waits for a free POST
    thread (runs of one process share them) or for a slow LMS: while any is outstanding, this thread renews
    the claims of the outstanding ones every half ``DELIVERY_TIMEOUT`` (``lifecycle.extend_claims``: one
    UPDATE for all of them, and none at all for a batch that is over within that time). Only a holder that
    has stopped (a worker killed) lets its claims lapse, a guard after the last renewal, for the sweep.

    While the database is unreachable (restarting, a dropped connection), the answers that came back are kept
    and recording them is tried again until the claims would start to lapse (``_record_answers``): a grade
    the LMS took is not posted again because the database blinked while it was being recorded.

    One claim that raises, in its POST or its recording, fails its submission alone
    (``lifecycle.fail_delivery``); the others are posted and recorded as usual.
    """
    if not claims:
        return []
    outcomes: list[lifecycle.DeliveryOutcome] = [lifecycle.DeliveryOutcome.RETRY] * len(claims)
    pool = _post_pool()
    index = {pool.submit(_post, claim): i for i, claim in enumerate(claims)}
    pending = set(index)
    every = max(0.05, float(setting("DELIVERY_TIMEOUT")) / 2)
    guard = lifecycle.delivery_guard().total_seconds()
    renewed = time.monotonic()
    while pending:
        done, pending = wait(pending, timeout=max(0.0, renewed + every - time.monotonic()), return_when=FIRST_COMPLETED)
        if done:
            _record(claims, [(index[future], future) for future in done], outcomes, until=renewed + guard)
        if pending and time.monotonic() - renewed >= every:
            try:
                lifecycle.extend_claims(claims[index[future]] for future in pending)
            except outage.DATABASE_CONNECTION_ERRORS:
                # The claims still hold for the rest of their guard; the next beat tries again, shortly.
                _drop_connection()
                time.sleep(RECORD_RETRY_SECONDS)
                continue
            renewed = time.monotonic()
    return outcomes


# While the database is unreachable, recording the LMS's answers is tried again this often.
RECORD_RETRY_SECONDS = 0.5


def _drop_connection() -> None:
    """Close this thread's database connection after an error that left it broken, so that the next query
    opens a new one (outside a transaction only: inside one, the caller's transaction is lost anyway)."""
    if not connection.in_atomic_block:
        connection.close()


def _record_answers(
    attempts: list[tuple[lifecycle.DeliveryClaim, int | None, str, int]], until: float
) -> list[tuple[lifecycle.DeliveryOutcome, float | None]]:
    """``lifecycle.record_deliveries``, tried again while the database is unreachable (restarting, a dropped
    connection) until monotonic time ``until``, when the claims would start to lapse. The LMS has answered
    these POSTs: giving up on recording them would have the sweep post the grades again once their claims
    lapsed, a duplicate of gradequeue's own making."""
    warned = False
    while True:
        try:
            return lifecycle.record_deliveries(attempts)
        except outage.DATABASE_CONNECTION_ERRORS as exc:
            if connection.in_atomic_block or time.monotonic() + RECORD_RETRY_SECONDS > until:
                raise
            if not warned:
                logger.warning(
                    "recording %d delivery attempts: the database is unreachable (%s: %s); trying again",
                    len(attempts),
                    type(exc).__name__,
                    lifecycle.printable(str(exc), 200),
                )
                warned = True
            _drop_connection()
            time.sleep(RECORD_RETRY_SECONDS)


def _record(
    claims: list[lifecycle.DeliveryClaim],
    returned: list[tuple[int, Future[tuple[int | None, str, int]]]],
    outcomes: list[lifecycle.DeliveryOutcome],
    *,
    until: float,
) -> None:
    """Record the POSTs that have just returned (``outcomes[i]`` for ``claims[i]``); while the database is
    unreachable, until monotonic time ``until`` (``_record_answers``)."""
    answered: list[tuple[int, int | None, str, int]] = []
    for i, future in returned:
        try:
            answered.append((i, *future.result()))
        except Exception as exc:
            outcomes[i] = _fail_alone(claims[i], exc)
    if not answered:
        return
    try:
        recorded = _record_answers([(claims[i], status, error, ms) for i, status, error, ms in answered], until)
    except outage.DATABASE_CONNECTION_ERRORS:
        raise
    except Exception:
        # One of them cannot be recorded (the whole lot was rolled back): one at a time, so that it fails alone.
        logger.warning(
            "recording %d delivery attempts raised; recording them one at a time", len(answered), exc_info=True
        )
        recorded = []
        for i, status, error, ms in answered:
            try:
                recorded.append(lifecycle.record_delivery(claims[i], http_status=status, error=error, duration_ms=ms))
            except outage.DATABASE_CONNECTION_ERRORS:
                raise
            except Exception as exc:
                recorded.append((_fail_alone(claims[i], exc), None))
    for (i, status, _error, ms), (outcome, retry_in) in zip(answered, recorded, strict=True):
        outcomes[i] = outcome
        _log(claims[i], status, outcome, retry_in, ms)


def _fail_alone(claim: lifecycle.DeliveryClaim, exc: BaseException) -> lifecycle.DeliveryOutcome:
    try:
        return lifecycle.fail_delivery(claim, exc)
    except outage.DATABASE_CONNECTION_ERRORS:
        raise
    except Exception:
        # Not even that could be recorded: the claim lapses and the sweep tries the submission again later.
        logger.error(
            "submission %s: could not record its delivery failure; left for the sweep",
            claim.submission_id,
            exc_info=True,
        )
        return lifecycle.DeliveryOutcome.RETRY


# A batch's POSTs must fit in this many seconds even when the LMS answers slowly (well within the task's time
# limit): this bounds the batch size.
RUN_SECONDS = 60.0
# A run starts no new batch after this many seconds: it hands over to a new run, whose message queues behind
# whatever else the workers have to do (a worker with a single process still reclaims leases on time).
TURN_SECONDS = 10.0


def score_and_deliver_returned(*, batch: int | None = None) -> dict[str, int]:
    """A scoring run: score every returned reply waiting, and post each usable grade to its LMS.

    With a shared cache the run is woken by the scoring signal (grading.scoring_signal). It starts with the
    flag set, so replies committed meanwhile send no task message, and reads again at once after a full
    batch. After a short one it clears the flag and listens: the next reply whose process does not remember
    the flag as set wakes it at once, and otherwise it reads again when the memory has run out. When that
    look finds nothing it waits, listening, for up to IDLE_SECONDS, and ends only if it has heard nothing.
    Without a shared cache every reply sends a run, and a run stops at its first batch that comes back short.
    After TURN_SECONDS it hands over to a new run.
    """
    # A batch's POSTs take at most (batch / POST_CONCURRENCY) x DELIVERY_TIMEOUT: keep that within RUN_SECONDS.
    rounds = max(1, int(RUN_SECONDS // float(setting("DELIVERY_TIMEOUT"))))
    batch = batch or min(int(setting("SCORE_BATCH")), POST_CONCURRENCY * rounds)
    started = time.monotonic()
    signal = scoring_signal.RunSignal()
    holding = signal.hold()
    # Whether this look is the last before a long wait: the flag cleared, and the memory waited out since.
    last_look = False
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
                # Nothing left unlocked when read, and any reply committed since then sent a run.
                return counts
            if last_look and taken == 0:
                # Nothing came while the memory ran out: wait to be woken, and end if nothing comes.
                left = TURN_SECONDS - (time.monotonic() - started)
                if not signal.wait(min(scoring_signal.IDLE_SECONDS, max(0.0, left))) and signal.end():
                    return counts
                last_look = False
            else:
                # Replies committed while the flag was set sent nothing: clear it and listen, then read again
                # when woken, or after the time for which a web process may still take the flag for set.
                if not signal.listen():
                    time.sleep(scoring_signal.MEMORY)
                    holding = False
                    continue
                last_look = not signal.wait(scoring_signal.MEMORY)
        now = time.monotonic()
        if now - started > TURN_SECONDS:
            break
        if holding and not last_look and not signal.refresh():
            # (Not before a last look: setting the flag then would let replies rely on a run about to wait.)
            holding = False
    scoring_signal.request_scoring(force=True)
    return counts
