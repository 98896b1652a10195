"""Django's database sessions, with a login's session stored once instead of twice (``KeyOnFirstSave``).

Use as ``SESSION_ENGINE = "grading.dbsessions"`` (the setting without a shared cache).
"""

from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore as DBStore

from grading.sessions import KeyOnFirstSave


class SessionStore(KeyOnFirstSave, DBStore):
    pass
