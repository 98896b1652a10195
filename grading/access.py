"""Which queues an account may use, and in which role.

An account sees only the queues it is granted: for everything else it gets the same answer as for a
queue that does not exist, so queue names do not leak.
"""

from __future__ import annotations

from typing import Any

from grading.models import Queue, Role


def _grants(user: Any, roles: tuple[str, ...]):  # type: ignore[no-untyped-def]
    queues = Queue.objects.all()
    if not user.is_superuser:
        queues = queues.filter(grants__user=user, grants__role__in=roles)
    return queues


def queue_for(user: Any, name: str, *roles: str) -> Queue | None:
    """The queue called ``name`` if ``user`` holds one of ``roles`` on it, else None."""
    return _grants(user, roles or (Role.LMS, Role.GRADER)).filter(name=name).first()


def queue_names(user: Any, *roles: str) -> list[str]:
    return sorted(set(_grants(user, roles or (Role.LMS, Role.GRADER)).values_list("name", flat=True)))


def queue_ids(user: Any, *roles: str) -> list[int]:
    return sorted(set(_grants(user, roles or (Role.LMS, Role.GRADER)).values_list("pk", flat=True)))
