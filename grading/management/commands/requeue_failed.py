import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from grading import lifecycle
from grading.models import Queue
from grading.stats import failed_submissions

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    match = DURATION.match(text.strip())
    if not match:
        raise CommandError(f"{text!r} is not a duration like 90s, 30m, 2h or 1d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Put submissions that could not be graded back in their queue for a fresh round of grading, e.g. after "
        "a grader outage. These are the ones queue_stats counts as FAILED: failed, or whose 'could not be "
        "graded' notice was already delivered or dead-lettered. Attempts start again from zero, and the LMS "
        "gets the new grade when it comes (a newer submission of the student is never overwritten: those "
        "are superseded, not failed). Example: manage.py requeue_failed --queue python-101 --since 2h --dry-run"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="Only this queue (repeatable); default all queues",
        )
        parser.add_argument(
            "--since",
            metavar="DURATION",
            help="Only submissions that failed within this long (e.g. 30m, 2h, 1d)",
        )
        parser.add_argument("--limit", type=int, default=None, help="Requeue at most this many, oldest first")
        parser.add_argument("--dry-run", action="store_true", help="List what would be requeued; change nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        candidates = failed_submissions().order_by("pk")
        if opts["queue"]:
            found = set(Queue.objects.filter(name__in=opts["queue"]).values_list("name", flat=True))
            unknown = sorted(set(opts["queue"]) - found)
            if unknown:
                raise CommandError(f"No queue named {', '.join(unknown)}")
            candidates = candidates.filter(queue__name__in=opts["queue"])
        if opts["since"]:
            candidates = candidates.filter(graded_at__gte=timezone.now() - parse_duration(opts["since"]))
        if opts["limit"] is not None:
            if opts["limit"] < 1:
                raise CommandError("--limit must be at least 1")
            candidates = candidates[: opts["limit"]]
        rows = list(candidates.values_list("pk", "queue__name", "status", "failure_reason"))
        if opts["dry_run"]:
            self.stdout.write(f"Would requeue {len(rows)} submission(s):")
            for pk, queue, status, reason in rows:
                self.stdout.write(f"  #{pk}  {queue}  {status}  {reason}")
            return
        actor = "command:requeue_failed"
        done = [pk for pk, *_ in rows if lifecycle.requeue(pk, actor=actor)]
        skipped = len(rows) - len(done)
        self.stdout.write(
            f"Requeued {len(done)} submission(s)" + (f": {', '.join(f'#{pk}' for pk in done)}" if done else "")
        )
        if skipped:
            self.stdout.write(f"Skipped {skipped}: their state changed while this ran.")
