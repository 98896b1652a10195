from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.models import Queue, QueueMode


class Command(BaseCommand):
    help = (
        "Create a queue, or update the settings of an existing one. Idempotent. "
        "Example: manage.py create_queue python-101 --lease-seconds 600"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Queue name, as the LMS problem's queue_name and the grader's config use it")
        parser.add_argument(
            "--mode", choices=QueueMode.values, default=None, help="How graders get work (default pull)"
        )
        parser.add_argument("--lease-seconds", type=int, default=None, help="Lease length for this queue")
        parser.add_argument("--max-attempts", type=int, default=None, help="Leases before a submission fails")

    def handle(self, *args: Any, **opts: Any) -> None:
        name = opts["name"].strip()
        if not name or len(name) > 128:
            raise CommandError("A queue name must have 1 to 128 characters")
        for option in ("lease_seconds", "max_attempts"):
            if opts[option] is not None and opts[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1")
        queue, created = Queue.objects.get_or_create(name=name)
        for field in ("mode", "lease_seconds", "max_attempts"):
            if opts[field] is not None:
                setattr(queue, field, opts[field])
        queue.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} queue {queue.name} (mode {queue.mode})")
