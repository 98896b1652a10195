import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from grading import secretbox
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
        parser.add_argument(
            "--max-in-flight", type=int, default=None, help="Push modes: submissions leased to graders at once"
        )
        parser.add_argument("--push-url", default=None, help="http mode: the grader's URL")
        parser.add_argument("--push-username", default=None, help="http mode: basic auth user (optional)")
        parser.add_argument(
            "--push-password-env",
            default=None,
            metavar="VARIABLE",
            help="http mode: read the basic auth password from this environment variable (not the command line)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        name = opts["name"].strip()
        if not name or len(name) > 128:
            raise CommandError("A queue name must have 1 to 128 characters")
        for option in ("lease_seconds", "max_attempts", "max_in_flight"):
            if opts[option] is not None and opts[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1")
        with transaction.atomic():
            queue, created = Queue.objects.get_or_create(name=name)
            for field in ("mode", "lease_seconds", "max_attempts", "max_in_flight", "push_url", "push_username"):
                if opts[field] is not None:
                    setattr(queue, field, opts[field])
            if opts["push_password_env"]:
                if opts["push_password_env"] not in os.environ:
                    raise CommandError(f"Environment variable {opts['push_password_env']} is not set")
                queue.push_password = secretbox.seal(os.environ[opts["push_password_env"]])
            try:
                queue.full_clean(exclude=["name"])
            except ValidationError as exc:
                if "push_url" in exc.message_dict and not queue.push_url:
                    raise CommandError("A queue in http mode needs --push-url") from None
                raise CommandError(f"Invalid queue settings: {exc.message_dict}") from None
            queue.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} queue {queue.name} (mode {queue.mode})")
