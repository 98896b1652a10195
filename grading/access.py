"""Which queues an account may use, and in which role.

An account sees only the queues it is granted: for everything else it gets the same answer as for a
queue that does not exist, so queue names do not leak.

Every get_submission and put_result asks this, so an account's grants are cached (Django's cache: Redis
when ``CACHE_URL`` points at one, shared by every process) as one small table per account and role set, and
for a few seconds in the process itself (``grading.localcache``).
A change to a grant, a queue or an account deletes the affected entries at once (signals below, connected
when the app loads, so management commands and the admin invalidate too); ``ACCESS_CACHE_SECONDS`` bounds
how long a change made behind the ORM's back (a raw UPDATE, ``bulk_create``) can go unseen.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

from grading import localcache
from grading.conf import setting
from grading.models import Queue, QueueGrant, Role

ALL_ROLES = (Role.LMS.value, Role.GRADER.value)


def _key(user_id: Any, roles: tuple[str, ...]) -> str:
    return f"gradequeue:grants:{user_id}:{','.join(sorted(roles))}"


def _table(user: Any, roles: tuple[str, ...]) -> dict[str, Queue]:
    """{name: queue} for the queues ``user`` holds one of ``roles`` on (grants only: a superuser holds none)."""
    roles = tuple(str(r) for r in roles) or ALL_ROLES
    ttl = float(setting("ACCESS_CACHE_SECONDS"))
    key = _key(user.pk, roles)
    table = localcache.get(key)
    if table is not None:
        return table
    if ttl > 0:
        table = cache.get(key)
        if table is not None:
            localcache.put(key, table)
            return table
    queues = Queue.objects.filter(grants__user=user, grants__role__in=roles).distinct()
    table = {queue.name: queue for queue in queues}
    if ttl > 0:
        cache.set(key, table, ttl)
        localcache.put(key, table)
    return table


def queue_for(user: Any, name: str, *roles: str) -> Queue | None:
    """The queue called ``name`` if ``user`` holds one of ``roles`` on it, else None."""
    return _table(user, roles).get(name)


def granted(user: Any, *roles: str) -> list[Queue]:
    """The queues ``user`` holds one of ``roles`` on (any role when none is named)."""
    return list(_table(user, roles).values())


def queue_names(user: Any, *roles: str) -> list[str]:
    return sorted(_table(user, roles))


def queue_ids(user: Any, *roles: str) -> list[int]:
    return sorted(queue.pk for queue in _table(user, roles).values())


# --- Invalidation ------------------------------------------------------------------------------------

ROLE_SETS = [(), (Role.LMS.value,), (Role.GRADER.value,), ALL_ROLES]


def forget(*user_ids: Any) -> None:
    """Drop the cached grants of these accounts (every role combination the API asks for)."""
    keys = {_key(uid, roles or ALL_ROLES) for uid in user_ids for roles in ROLE_SETS}
    if keys:
        localcache.forget(*keys)
        cache.delete_many(list(keys))


def _grant_changed(sender: Any, instance: QueueGrant, **kwargs: Any) -> None:
    forget(instance.user_id)


def _queue_changed(sender: Any, instance: Queue, **kwargs: Any) -> None:
    forget(*set(QueueGrant.objects.filter(queue_id=instance.pk).values_list("user_id", flat=True)))


def _user_changed(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    from grading.auth_backends import only_last_login

    if not only_last_login(update_fields):
        forget(instance.pk)


def connect_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save, pre_delete

    post_save.connect(_grant_changed, sender=QueueGrant, dispatch_uid="gradequeue-access-grant-save")
    post_delete.connect(_grant_changed, sender=QueueGrant, dispatch_uid="gradequeue-access-grant-delete")
    post_save.connect(_queue_changed, sender=Queue, dispatch_uid="gradequeue-access-queue-save")
    # Before the delete, while the grants that say who held the queue still exist.
    pre_delete.connect(_queue_changed, sender=Queue, dispatch_uid="gradequeue-access-queue-delete")
    user_model = get_user_model()
    post_save.connect(_user_changed, sender=user_model, dispatch_uid="gradequeue-access-user-save")
    post_delete.connect(_user_changed, sender=user_model, dispatch_uid="gradequeue-access-user-delete")
