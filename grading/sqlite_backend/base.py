"""SQLite for the embedded configuration (``make run``): writers take turns on a lock file before SQLite's lock.

Web threads, the worker and beat all write to one SQLite file, and SQLite lets one writer in at a time. A
writer that finds the database locked does not queue: SQLite's busy handler sleeps and tries again, in steps
that grow to 100 ms, and whoever tries at the right moment wins. Under a watcher's load (16 web threads,
the worker's scoring and deliveries) that polling left some requests waiting seconds for a lock that was
never held for more than a few milliseconds at a time (measured with bench/watcher_drain.py: 52 of 3 600
requests over 1 s, every one of them waiting in BEGIN IMMEDIATE). Here every write transaction, and every
write statement outside one, first takes an exclusive ``flock`` on ``<database>-writers.lock``: the kernel
wakes a waiter the moment the lock is released, with no polling. SQLite's own lock and busy timeout stay
underneath, for writers that do not use this backend (``sqlite3`` on the command line).
"""

from __future__ import annotations

import fcntl
import os
from typing import Any

from django.db.backends.sqlite3 import base

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writers_fd: int | None = None
        self._writing = False

    def take_write_turn(self) -> None:
        """Wait for this connection's turn to write (a no-op if it has it, or for an in-memory database)."""
        if self._writing or self.is_in_memory_db():
            return
        if self._writers_fd is None:
            self._writers_fd = os.open(f"{self.settings_dict['NAME']}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._writers_fd, fcntl.LOCK_EX)
        self._writing = True

    def end_write_turn(self) -> None:
        if self._writing and self._writers_fd is not None:
            fcntl.flock(self._writers_fd, fcntl.LOCK_UN)
        self._writing = False

    def _start_transaction_under_autocommit(self) -> None:
        self.take_write_turn()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private, not in the stubs
        except BaseException:
            self.end_write_turn()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        finally:
            self.end_write_turn()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self.end_write_turn()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]
        finally:
            self.end_write_turn()
            if self._writers_fd is not None:
                os.close(self._writers_fd)
                self._writers_fd = None

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=TurnTakingCursor)
        cursor.db = self
        return cursor


class TurnTakingCursor(base.SQLiteCursorWrapper):
    """A write statement outside a transaction (``QuerySet.update`` in autocommit) takes a turn for itself."""

    db: DatabaseWrapper

    def _own_turn(self, query: str) -> bool:
        return not self.db._writing and query.lstrip()[:7].upper().startswith(WRITES)

    def execute(self, query: str, params: Any = None) -> Any:
        if not self._own_turn(query):
            return super().execute(query, params)
        self.db.take_write_turn()
        try:
            return super().execute(query, params)
        finally:
            self.db.end_write_turn()

    def executemany(self, query: str, param_list: Any) -> Any:
        if not self._own_turn(query):
            return super().executemany(query, param_list)
        self.db.take_write_turn()
        try:
            return super().executemany(query, param_list)
        finally:
            self.db.end_write_turn()
