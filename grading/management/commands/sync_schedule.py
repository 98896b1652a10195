from typing import Any

from django.core.management.base import BaseCommand

from grading import schedule


class Command(BaseCommand):
    help = (
        "Write gradequeue's periodic tasks (reclaiming expired leases, the follow-up sweep) into "
        "django-celery-beat. Idempotent: run it on every deployment."
    )

    def handle(self, *args: Any, **opts: Any) -> None:
        counts = schedule.sync()
        self.stdout.write("Periodic tasks: {created} created, {updated} updated, {disabled} disabled".format(**counts))
