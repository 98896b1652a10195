"""PostgreSQL, with a health check that costs no round trip while the connection is sound.

Django's check (``CONN_HEALTH_CHECKS``) sends ``SELECT 1`` before the first query of every request that
reuses a connection: on the hot path that was one statement in two, a round trip per request for the web
and a statement per request for PostgreSQL. An idle connection that is sound has nothing to read. One that a
restart, ``pg_terminate_backend`` or a dropped proxy has broken has something: PostgreSQL's FATAL message or
the end of the stream. So the check first asks the kernel whether the socket has anything to read (a poll
with no wait). Nothing: the connection is usable. Anything: Django's own ``SELECT 1`` decides, as before.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq

# Readable, or the other side hung up or failed: either way, let the round trip decide.
_ANYTHING = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        pgconn = connection.pgconn
        if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        try:
            poller = select.poll()
            poller.register(pgconn.socket, _ANYTHING)
            pending = poller.poll(0)
        except (OSError, ValueError, psycopg.Error):
            return False
        if not pending:
            return True
        return super().is_usable()
