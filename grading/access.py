"""Which queues an account may use, and in which role.

An account sees only the queues it is granted: for everything else it gets the same answer as for a
queue that does not exist, so queue names do not leak.

Every get_submission and put_result asks this, so an account's grants are cached (Django's cache: Redis
when ``CACHE_URL`` points at one, shared by every process) as one small table per account and role set, and
for a few seconds in the process itself (``grading.localcache``). The shared table holds each queue's column
values as a tuple, and a process builds the Queue of a name only when it is asked for: for a grader granted
1 000 queues, unpickling 1 000 model instances took 10-50 ms, every few seconds in every process, and sorting
their ids 1 ms on every put_result (bench/scale_load.py).
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


# v2: the shared entries are {name: column values}, no longer {name: Queue}.
def _key(user_id: Any, roles: tuple[str, ...]) -> str:
    return f"gradequeue:grants:v2:{user_id}:{','.join(sorted(roles))}"


def _columns() -> list[str]:
    return [field.attname for field in Queue._meta.concrete_fields]


class _Grants:
    """One account's queues for a set of roles, in one process: the rows, their sorted ids, Queues built once."""

    def __init__(self, rows: dict[str, tuple[Any, ...]]) -> None:
        self.rows = rows
        self.columns = _columns()
        pk = self.columns.index(Queue._meta.pk.attname)
        self.ids = sorted(row[pk] for row in rows.values())
        self.queues: dict[str, Queue] = {}

    def get(self, name: str) -> Queue | None:
        queue = self.queues.get(name)
        if queue is None:
            row = self.rows.get(name)
            if row is None:
                return None
            queue = self.queues[name] = Queue.from_db("default", self.columns, row)
        return queue


def _table(user: Any, roles: tuple[str, ...]) -> _Grants:
    """The queues ``user`` holds one of ``roles`` on (grants only: a superuser holds none)."""
    roles = tuple(str(r) for r in roles) or ALL_ROLES
    ttl = float(setting("ACCESS_CACHE_SECONDS"))
    key = _key(user.pk, roles)
    table = localcache.get(key)
    if table is not None:
        return table  # type: ignore[no-any-return]
    rows = cache.get(key) if ttl > 0 else None
    if rows is None:
        columns = _columns()
        found = Queue.objects.filter(grants__user=user, grants__role__in=roles).distinct().values_list(*columns)
        rows = {row[columns.index("name")]: tuple(row) for row in found}
        if ttl > 0:
            cache.set(key, rows, ttl)
    table = _Grants(rows)
    if ttl > 0:
        localcache.put(key, table)
    return table


def queue_for(user: Any, name: str, *roles: str) -> Queue | None:
    """The queue called ``name`` if ``user`` holds one of ``roles`` on it, else None."""
    return _table(user, roles).get(name)


def granted(user: Any, *roles: str) -> list[Queue]:
    """The queues ``user`` holds one of ``roles`` on (any role when none is named)."""
    table = _table(user, roles)
    return [queue for queue in map(table.get, table.rows) if queue is not None]


def queue_names(user: Any, *roles: str) -> list[str]:
    return sorted(_table(user, roles).rows)


def queue_ids(user: Any, *roles: str) -> list[int]:
    """The ids of the queues ``user`` holds one of ``roles`` on, ascending (a copy: callers may change it)."""
    return list(_table(user, roles).ids)


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
