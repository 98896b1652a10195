"""The grading domain's data: queues, who may use them, submissions and their event trail.

Nothing outside ``grading.lifecycle`` writes ``Submission.status``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class QueueMode(models.TextChoices):
    PULL = "pull", "Pull (graders poll over HTTP)"
    CELERY = "celery", "Push to Celery-queue graders"
    HTTP = "http", "Push to an HTTP grader"


# The modes whose submissions gradequeue sends out (grading.push) instead of waiting for a grader to pull them.
PUSH_MODES = (QueueMode.CELERY, QueueMode.HTTP)


class Queue(models.Model):
    name = models.CharField(max_length=128, unique=True)
    mode = models.CharField(max_length=16, choices=QueueMode.choices, default=QueueMode.PULL)
    lease_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Lease length for this queue; empty = the GRADEQUEUE default."
    )
    max_attempts = models.PositiveIntegerField(
        null=True, blank=True, help_text="Leases before a submission fails; empty = the GRADEQUEUE default."
    )
    # Push modes (grading.push). How many submissions may be leased to graders at once: one course
    # cannot flood a shared grader pool, and a submission is not leased while it would only wait in line.
    max_in_flight = models.PositiveIntegerField(
        null=True, blank=True, help_text="Push modes: submissions leased to graders at once; empty = no cap."
    )
    push_url = models.URLField(
        max_length=500, blank=True, help_text="HTTP push: the grader's URL, POSTed each submission."
    )
    push_username = models.CharField(max_length=150, blank=True, help_text="HTTP push: optional basic auth user.")
    # Encrypted (grading.secretbox): "fernet:<token>". Never shown: the admin's form only replaces or clears it.
    push_password = models.TextField(blank=True, help_text="HTTP push: optional basic auth password, encrypted.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        from grading import secretbox

        # A password assigned in clear is sealed before it reaches the database.
        if self.push_password and not secretbox.is_sealed(self.push_password):
            self.push_password = secretbox.seal(self.push_password)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        # A queue in http mode without a grader URL would lease its submissions to nobody until they fail:
        # refuse it wherever a queue is validated (the admin's form, create_queue).
        if self.mode == QueueMode.HTTP and not self.push_url:
            raise ValidationError({"push_url": "A queue in http mode needs a grader URL (push_url)."})


class Role(models.TextChoices):
    LMS = "lms", "LMS (may submit)"
    GRADER = "grader", "Grader (may pull and put results)"


class QueueGrant(models.Model):
    """One account's right to use one queue in one role."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="queue_grants")
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="grants")
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "queue", "role"], name="unique_grant")]

    def __str__(self) -> str:
        return f"{self.user} → {self.queue} ({self.role})"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued (waiting for a grader)"
    PULLED = "pulled", "Pulled (leased to a grader)"
    RETURNED = "returned", "Returned (grader reply received, being scored)"
    GRADED = "graded", "Graded (grade waiting for delivery to the LMS)"
    FAILED = "failed", "Failed (could not be graded; notice waiting for delivery)"
    DELIVERED = "delivered", "Delivered to the LMS"
    DEAD_LETTER = "dead_letter", "Dead letter (LMS delivery gave up)"
    SUPERSEDED = "superseded", "Superseded by a newer submission"
    CANCELLED = "cancelled", "Cancelled"


def callback_digest(url: str) -> str:
    """A fixed-size key for the callback URL, which can be far longer than any sensible index entry."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


class Submission(models.Model):
    # No index of its own on queue_id: with one, PostgreSQL's plan for the lease made for any queue (the lease is
    # prepared on each connection) walked that index through the whole of a long queue and sorted it, instead of
    # reading the head of sub_waiting (tests/grading/test_lease_plan.py). The look-ups by queue read indexes that
    # start with it and hold only the rows they want (sub_waiting, sub_live, sub_failed); the admin's and the
    # API's lists filtered by queue walk the primary key, newest first.
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="submissions", db_index=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)

    # What the LMS sent, kept whole.
    lms_header = models.TextField(help_text="The LMS's xqueue_header string, verbatim.")
    lms_callback_url = models.TextField()
    callback_hash = models.CharField(max_length=64, editable=False)
    lms_key = models.TextField(blank=True)
    body = models.TextField(blank=True, help_text="The LMS's xqueue_body string, verbatim.")
    files = models.JSONField(default=dict, blank=True, help_text="{name: storage path}")
    # No index on the two account columns: every status change of a submission writes a new row version into
    # each of its indexes, and nothing looks submissions up by account (deleting an account scans instead).
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()

    # The current lease. A new lease gets a new key, so a result from an older lease is refused.
    lease_key = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    leased_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Leases handed out so far.")

    # The grade.
    grader_reply = models.TextField(blank=True, help_text="The grader's xqueue_body, verbatim.")
    returned_at = models.DateTimeField(null=True, blank=True)
    lms_body = models.TextField(blank=True, help_text="What is (or will be) posted to the LMS.")
    failure_reason = models.TextField(blank=True)
    graded_at = models.DateTimeField(null=True, blank=True)

    # Delivery to the LMS.
    delivery_attempts = models.PositiveIntegerField(default=0)
    delivery_started_at = models.DateTimeField(null=True, blank=True)
    next_delivery_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        indexes = [
            # get_submission / get_queuelen: the oldest waiting submission of one queue, and their count.
            models.Index(fields=["queue", "id"], name="sub_waiting", condition=Q(status="queued")),
            # The reclaim sweep: leases that have expired.
            # With the queue beside each entry, queue_stats counts the leases of each queue from this index alone.
            models.Index(
                fields=["lease_expires_at"], name="sub_leased", condition=Q(status="pulled"), include=["queue"]
            ),
            # Superseding: earlier submissions for the same student and problem, from the same LMS account in
            # the same queue (another tenant's rows with the same callback URL are not even visited).
            models.Index(fields=["callback_hash", "queue", "submitted_by"], name="sub_supersede"),
            # The follow-up sweep and the admin filters.
            models.Index(fields=["status", "updated_at"], name="sub_status_updated"),
            # queue_stats' waiting and dead letters (count and oldest per queue and status), read from the index
            # alone: the live rows only, wherever the semester's rows have put them in the table. Not the leased
            # ones: with them here, PostgreSQL would find a queue's expired leases (in every lease and "is there
            # work?") by reading each of its leases instead of sub_leased's range of the expired.
            models.Index(
                fields=["queue", "status", "created_at"],
                name="sub_live",
                condition=Q(status__in=["queued", "dead_letter"]),
            ),
            # The submissions that could not be graded (requeue_failed's candidates). queue_stats counts the
            # failed and dead-lettered ones from the index alone by (queue, status); the delivered notices,
            # which stay for the rest of the semester, come from the metrics' roll-up instead.
            models.Index(
                fields=["queue", "status", "id"],
                name="sub_failed",
                condition=Q(status__in=["failed", "delivered", "dead_letter"]) & ~Q(failure_reason=""),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.queue_id} {self.status}"


class SubmissionEvent(models.Model):
    """One row per transition: the audit trail and the admin timeline. Append-only."""

    # Indexed by event_submission (submission, id), which serves every look-up by submission.
    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="events", db_index=False)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    reason = models.CharField(max_length=64)
    actor = models.CharField(max_length=160)
    created_at = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["submission", "id"], name="event_submission")]

    def __str__(self) -> str:
        return f"#{self.submission_id}: {self.from_status or '∅'} → {self.to_status} ({self.reason})"


class QueueSample(models.Model):
    """A queue's depth at one moment, recorded periodically by beat for the status page's chart."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="samples")
    taken_at = models.DateTimeField()
    waiting = models.PositiveIntegerField()
    leased = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["taken_at"], name="sample_taken")]

    def __str__(self) -> str:
        return f"{self.queue_id} @ {self.taken_at:%H:%M:%S}: {self.waiting} waiting, {self.leased} leased"


class LoginFailureCounter(models.Model):
    """Failed logins of one (account, client address) pair, or of one address, in the current window
    (``grading.throttle``). Counted in the database: atomic on PostgreSQL and SQLite, shared by every web
    process, and independent of the cache."""

    key = models.CharField(max_length=80, primary_key=True)
    count = models.IntegerField(default=0)
    # Seconds since the epoch: the window's end, after which the counter starts again from nothing.
    window_ends = models.FloatField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class ApiToken(models.Model):
    """A bearer token of the JSON API (``/api/v1/``), issued by ``create_api_token``.

    The token itself is shown once, when it is issued; only its SHA-256 is stored (a token is 256 random
    bits, so a fast hash is as safe as a slow one). ``prefix`` names a token in listings without revealing it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class XqueueImport(models.Model):
    """Which openedx/xqueue submission a gradequeue submission was imported from (``manage.py import_xqueue``).

    The unique pair makes the import idempotent: a second run finds the row and imports nothing again.
    """

    # A name for the xqueue installation, for a site that imports from more than one.
    origin = models.CharField(max_length=64, default="xqueue")
    xqueue_id = models.BigIntegerField()
    submission = models.OneToOneField(Submission, on_delete=models.CASCADE, related_name="xqueue_import")
    imported_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["origin", "xqueue_id"], name="unique_xqueue_import")]

    def __str__(self) -> str:
        return f"{self.origin} #{self.xqueue_id} → #{self.submission_id}"


class MetricsWatermark(models.Model):
    """How far ``grading.metrics`` has rolled the event trail up into ``MetricCounter`` rows: every event with
    an id up to ``last_event_id`` is counted, except those listed in ``MetricGap``. One row (pk 1), which is
    also the lock that one roll-up at a time holds."""

    last_event_id = models.BigIntegerField(default=0)
    rolled_up_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"events up to #{self.last_event_id}"


class MetricGap(models.Model):
    """An event id below the watermark that was not there when the roll-up passed it: its transaction may
    still commit (ids are handed out before commit), so later roll-ups look for it until ``seen_at`` is
    older than ``grading.metrics.GAP_HORIZON``."""

    event_id = models.BigIntegerField(primary_key=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"gap #{self.event_id}"


class MetricCounter(models.Model):
    """One cumulative number of one queue, rolled up from the event trail (``grading.metrics``): survives
    restarts and ``purge_submissions``, and every process reads the same row."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=64)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "name"], name="unique_metric_counter")]

    def __str__(self) -> str:
        return f"{self.queue_id} {self.name} = {self.value}"
