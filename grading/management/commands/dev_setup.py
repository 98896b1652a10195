import json
import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from grading import credentials
from grading.models import Queue

DEFAULTS = {
    "GRADEQUEUE_DEV_QUEUE": "test-123",
    "GRADEQUEUE_DEV_LMS_USER": "lms",
    "GRADEQUEUE_DEV_LMS_PASSWORD": "lms-dev-password",
    "GRADEQUEUE_DEV_GRADER_USER": "grader",
    "GRADEQUEUE_DEV_GRADER_PASSWORD": "grader-dev-password",
}


class Command(BaseCommand):
    help = (
        "Development only: on a database with no queues and no accounts, create a queue, an LMS account and "
        "a grader account (names and passwords from GRADEQUEUE_DEV_* variables), then print how to connect "
        "xqueue-watcher. Refuses to run unless GRADEQUEUE_DEV=1."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:18040")

    def handle(self, *args: Any, **opts: Any) -> None:
        if os.environ.get("GRADEQUEUE_DEV") != "1":
            raise CommandError("dev_setup is for development databases only (set GRADEQUEUE_DEV=1)")
        cfg = {name: os.environ.get(name) or default for name, default in DEFAULTS.items()}
        fresh = not Queue.objects.exists() and not get_user_model().objects.exists()
        if fresh:
            call_command("create_queue", cfg["GRADEQUEUE_DEV_QUEUE"], stdout=self.stdout)
            for role, user, password in (
                ("lms", "GRADEQUEUE_DEV_LMS_USER", "GRADEQUEUE_DEV_LMS_PASSWORD"),
                ("grader", "GRADEQUEUE_DEV_GRADER_USER", "GRADEQUEUE_DEV_GRADER_PASSWORD"),
            ):
                call_command(
                    "create_account",
                    cfg[user],
                    role=role,
                    queue=[cfg["GRADEQUEUE_DEV_QUEUE"]],
                    password=cfg[password],
                    stdout=self.stdout,
                )
                # Their passwords are printed below and in the README, so a slow hash would protect nothing; the
                # machine-secret hash lets a watcher's threads all log in at once within its 1 s timeout.
                account = get_user_model().objects.get(username=cfg[user])
                account.password = credentials.make_hash(cfg[password])
                account.save(update_fields=["password"])
        else:
            self.stdout.write("Database already has queues or accounts: development accounts left as they are.")
        self.stdout.write(
            f'\nConnect xqueue-watcher with conf.d/{cfg["GRADEQUEUE_DEV_QUEUE"]}.json (README, "Connect '
            'xqueue-watcher", shows the handler answer_grader.py):\n'
            + json.dumps(watcher_config(cfg, opts["base_url"]), indent=2)
            + f"\nThe LMS (XQUEUE_INTERFACE) uses url {opts['base_url']}, django_auth "
            f'{{"username": "{cfg["GRADEQUEUE_DEV_LMS_USER"]}", "password": "{cfg["GRADEQUEUE_DEV_LMS_PASSWORD"]}"}}.\n'
        )


def watcher_config(cfg: dict[str, str], base_url: str) -> dict[str, Any]:
    """The conf.d file for xqueue-watcher, as README's "Connect xqueue-watcher" shows it."""
    return {
        cfg["GRADEQUEUE_DEV_QUEUE"]: {
            "SERVER": base_url,
            "AUTH": [cfg["GRADEQUEUE_DEV_GRADER_USER"], cfg["GRADEQUEUE_DEV_GRADER_PASSWORD"]],
            "CONNECTIONS": 2,
            "HANDLERS": [{"HANDLER": "answer_grader.AnswerGrader", "KWARGS": {"grader_root": "/path/to/graders/"}}],
        }
    }
