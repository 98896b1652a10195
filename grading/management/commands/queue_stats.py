import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.models import Queue
from grading.stats import format_age, queue_stats

COLUMNS = ("QUEUE", "WAITING", "LEASED", "OLDEST WAITING", "FAILED", "DEAD LETTERS")


class Command(BaseCommand):
    help = (
        "Print one line per queue: submissions waiting for a grader, leased to one, the age of the oldest "
        "waiting submission, failed (could not be graded and not requeued since; requeue_failed takes them "
        "back) and dead letters (grades the LMS never accepted; redeliver them from the admin). "
        "Example: manage.py queue_stats --queue python-101"
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
            "--json",
            action="store_true",
            help="Print a JSON list instead of a table (ages in seconds), for scripts",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        names = opts["queue"]
        unknown = sorted(set(names) - set(Queue.objects.filter(name__in=names).values_list("name", flat=True)))
        if unknown:
            raise CommandError(f"No queue named {', '.join(unknown)}")
        rows = queue_stats(names or None)
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "queue": r.name,
                            "waiting": r.waiting,
                            "leased": r.leased,
                            "oldest_waiting_seconds": r.oldest_age_seconds,
                            "failed": r.failed,
                            "dead_letter": r.dead_letter,
                        }
                        for r in rows
                    ],
                    indent=2,
                )
            )
            return
        if not rows:
            self.stdout.write("No queues. Create one with: manage.py create_queue NAME")
            return
        table = [COLUMNS] + [
            (
                r.name,
                str(r.waiting),
                str(r.leased),
                format_age(r.oldest_age_seconds),
                str(r.failed),
                str(r.dead_letter),
            )
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
        for row in table:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            self.stdout.write("  ".join(cells).rstrip())
