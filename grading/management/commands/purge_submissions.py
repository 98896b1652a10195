import math
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading import retention


class Command(BaseCommand):
    help = (
        "Delete finished submissions (delivered, superseded, cancelled; dead letters only with "
        "--include-dead-letter) that last changed more than --older-than-days ago, with their events "
        "and stored files, one short transaction per --batch. "
        "Example: manage.py purge_submissions --older-than-days 90"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=float,
            required=True,
            metavar="DAYS",
            help="Only submissions whose last change is older than this",
        )
        parser.add_argument("--batch", type=int, default=500, help="Submissions deleted per transaction (default 500)")
        parser.add_argument(
            "--include-dead-letter", action="store_true", help="Also delete dead letters: grades the LMS never received"
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted")
        parser.add_argument(
            "--max-rate",
            type=float,
            metavar="N",
            help="Delete at most N submissions a second on average (a pause between batches), to purge beside "
            "graders at work",
        )
        parser.add_argument(
            "--pause", type=float, default=0.0, metavar="SECONDS", help="Wait this long after each batch (default 0)"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["older_than_days"] < 0:
            raise CommandError("--older-than-days must not be negative")
        if opts["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        if opts["max_rate"] is not None and not opts["max_rate"] > 0:
            raise CommandError("--max-rate must be positive")
        if not 0 <= opts["pause"] < math.inf:
            raise CommandError("--pause must be a number of seconds, not negative")
        report = retention.purge(
            timedelta(days=opts["older_than_days"]),
            batch=opts["batch"],
            include_dead_letter=opts["include_dead_letter"],
            dry_run=opts["dry_run"],
            max_rate=opts["max_rate"],
            pause=opts["pause"],
        )
        verb = "Would delete" if opts["dry_run"] else "Deleted"
        self.stdout.write(f"{verb} {report.submissions} submission(s) and {report.files} stored file(s).")
        if opts["verbosity"] >= 2 and not opts["dry_run"]:
            rate = report.submissions / report.seconds if report.seconds else 0.0
            self.stdout.write(
                f"With them {report.events} event(s) and {report.imports} import record(s); {report.batches} "
                f"batch(es) in {report.seconds:.1f} s, {rate:.0f} submission(s) a second."
            )
        if report.kept:
            raise CommandError(
                f"Kept {len(report.kept)} submission(s) whose stored files could not be deleted "
                f"(the next run tries again): " + ", ".join(str(pk) for pk in report.kept[:20])
            )
