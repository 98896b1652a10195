from typing import Any

from django.core.management.base import BaseCommand, CommandError

from grading.conf import setting
from grading.models import Queue, QueueMode


class Command(BaseCommand):
    help = (
        "Create the queues listed in GRADEQUEUE_QUEUES (comma-separated 'name' or 'name:mode'). "
        "Existing queues are left as they are. Run at start-up by make run and the compose services."
    )

    def handle(self, *args: Any, **opts: Any) -> None:
        created = []
        for item in setting("SEED_QUEUES"):
            name, _, mode = item.partition(":")
            mode = mode or QueueMode.PULL
            if mode not in QueueMode.values:
                raise CommandError(
                    f"GRADEQUEUE_QUEUES: {item!r} has unknown mode {mode!r} ({', '.join(QueueMode.values)})"
                )
            _, was_created = Queue.objects.get_or_create(name=name.strip(), defaults={"mode": mode})
            if was_created:
                created.append(name)
        self.stdout.write(f"Seeded queues: {', '.join(created) or 'none new'}")
