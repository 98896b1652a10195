import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from grading import credentials
from grading.models import Queue, QueueGrant, Role


class Command(BaseCommand):
    help = (
        "Create an LMS or grader account (or update its credential) and grant it queues. Idempotent. "
        "Example: manage.py create_account watcher1 --role grader --queue python-101 --generate-secret"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            choices=Role.values,
            required=True,
            help="lms: may submit; grader: may pull and put results",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="Grant this queue (repeatable). The queue must exist.",
        )
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--generate-secret",
            action="store_true",
            help="Generate a 256-bit secret for this machine account, store its keyed hash (checked in "
            "microseconds) and print it once. Replaces any earlier password or secret.",
        )
        group.add_argument("--password", help="The password (visible in the process list; prefer --password-env)")
        group.add_argument("--password-env", metavar="VAR", help="Read the password from this environment variable")

    def handle(self, *args: Any, **opts: Any) -> None:
        password = opts["password"]
        if opts["password_env"]:
            password = os.environ.get(opts["password_env"])
            if not password:
                raise CommandError(f"Environment variable {opts['password_env']} is empty or not set")
        queues = []
        for name in opts["queue"]:
            queue = Queue.objects.filter(name=name).first()
            if queue is None:
                raise CommandError(f"No queue named {name!r}; create it with create_queue first")
            queues.append(queue)
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(username=opts["username"])
            if created and not password and not opts["generate_secret"]:
                raise CommandError("A new account needs --generate-secret, --password or --password-env")
            secret = credentials.generate_secret() if opts["generate_secret"] else None
            if secret:
                user.password = credentials.make_hash(secret)
                user.save()
            elif password:
                user.set_password(password)
                user.save()
            for queue in queues:
                QueueGrant.objects.get_or_create(user=user, queue=queue, role=opts["role"])
        granted = ", ".join(q.name for q in queues) or "no new queues"
        self.stdout.write(
            f"{'Created' if created else 'Updated'} account {user.get_username()} ({opts['role']}): {granted}"
        )
        if secret:
            self.stdout.write(f"Secret of {user.get_username()} (shown only this once; use it as the password):")
            self.stdout.write(secret)
