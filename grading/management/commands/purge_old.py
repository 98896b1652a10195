from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from grading import files
from grading.models import Queue, Status, Submission

# Only submissions that are over for good: nobody owes anybody a grade for them any more. Dead letters
# are kept (a grade the LMS never got still needs an operator).
FINISHED = (Status.DELIVERED, Status.SUPERSEDED, Status.CANCELLED)


class Command(BaseCommand):
    help = (
        "Delete finished submissions (delivered, superseded or cancelled) last changed more than --days ago, "
        "with their timeline and stored files. Dead letters and anything still in progress are kept. Keeps "
        "the database, the admin and the metrics queries small. "
        "Example: manage.py purge_old --days 90 --dry-run"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            required=True,
            help="Delete finished submissions last changed more than this many days ago",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="Only this queue (repeatable); default all queues",
        )
        parser.add_argument("--batch", type=int, default=1000, help="Rows deleted per transaction (default 1000)")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["days"] < 1:
            raise CommandError("--days must be at least 1")
        if opts["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        cutoff = timezone.now() - timedelta(days=opts["days"])
        old = Submission.objects.filter(status__in=FINISHED, updated_at__lt=cutoff)
        if opts["queue"]:
            found = set(Queue.objects.filter(name__in=opts["queue"]).values_list("name", flat=True))
            unknown = sorted(set(opts["queue"]) - found)
            if unknown:
                raise CommandError(f"No queue named {', '.join(unknown)}")
            old = old.filter(queue__name__in=opts["queue"])
        if opts["dry_run"]:
            self.stdout.write(
                f"Would delete {old.count()} finished submission(s) last changed before {cutoff:%Y-%m-%d %H:%M} UTC"
            )
            return
        deleted = 0
        while True:
            with transaction.atomic():
                # Locked until the DELETE, so that a row requeued meanwhile is neither deleted nor loses files.
                batch = list(old.select_for_update().order_by("pk").values_list("pk", "files")[: opts["batch"]])
                if not batch:
                    break
                Submission.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
            files.delete(path for _, stored in batch for path in (stored or {}).values())
            deleted += len(batch)
        self.stdout.write(f"Deleted {deleted} finished submission(s) last changed before {cutoff:%Y-%m-%d %H:%M} UTC")
