"""Sessions from the cache (Redis) and the database, as Django's ``cached_db``, plus a few seconds in the
process (``grading.localcache``): a grader polling several times a second then costs no round trip at all
for its session. Saving or deleting a session in this process forgets the local copy at once; a logout in
another process is seen here within ``LOCAL_CACHE_SECONDS``.

Use as ``SESSION_ENGINE = "grading.sessions"`` (``grading.dbsessions`` without a shared cache).
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.cached_db import SessionStore as CachedDBStore

from grading import localcache


class KeyOnFirstSave:
    """``login()`` cycles the session key against session fixation. With no stored session yet (a client's
    first login, or a cookie naming no session) there is nothing to replace: Django would still store an
    empty session under a new key and then rewrite it with the login, a transaction more per login. Here the
    session gets its fresh random key when it is first saved instead."""

    session_key: str | None

    def cycle_key(self) -> None:
        if self.session_key is None:
            return
        super().cycle_key()  # type: ignore[misc]


class SessionStore(KeyOnFirstSave, CachedDBStore):
    def _local_key(self) -> str:
        return "gradequeue:session:" + (self.session_key or "")

    def load(self) -> dict[str, Any]:
        if self.session_key:
            data = localcache.get(self._local_key())
            if data is not None:
                return dict(data)
        data = super().load()
        if self.session_key and data:
            localcache.put(self._local_key(), dict(data))
        return data

    def save(self, must_create: bool = False) -> None:
        if self.session_key:
            localcache.forget(self._local_key())
        super().save(must_create)

    def delete(self, session_key: str | None = None) -> None:
        localcache.forget("gradequeue:session:" + (session_key or self.session_key or ""))
        super().delete(session_key)

    def cycle_key(self) -> None:
        if self.session_key:
            localcache.forget(self._local_key())
        super().cycle_key()
