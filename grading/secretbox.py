"""Secrets that gradequeue must be able to read back (an HTTP grader's basic-auth password), encrypted at rest.

Values are sealed with Fernet (``cryptography``: AES-128-CBC with an HMAC-SHA256, authenticated) under a key
from the environment, ``GRADEQUEUE_ENCRYPTION_KEY``: any text, or several comma-separated (the first seals,
every one opens: to rotate, put the new key first, re-save the values, then drop the old one). Without it the
key is derived from ``DJANGO_SECRET_KEY``. A sealed value reads ``fernet:<token>``, so the database, a backup
or a cached copy of a queue row never holds the password itself.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.crypto import salted_hmac

from grading.conf import setting

PREFIX = "fernet:"


class CannotOpen(Exception):
    """A sealed value that none of the configured keys opens (the key changed, or the value was altered)."""


def _fernet(key_text: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_text.encode("utf-8")).digest()))


def _box() -> MultiFernet:
    keys = [key.strip() for key in str(setting("ENCRYPTION_KEY") or "").split(",") if key.strip()]
    if not keys:
        derived = salted_hmac("gradequeue.secretbox", "encryption-key", settings.SECRET_KEY, algorithm="sha256")
        keys = [derived.hexdigest()]
    return MultiFernet([_fernet(key) for key in keys])


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def seal(plain: str) -> str:
    """The stored form of ``plain``; empty stays empty (no secret)."""
    if not plain:
        return ""
    return PREFIX + _box().encrypt(plain.encode("utf-8")).decode("ascii")


def open_sealed(stored: str) -> str:
    """The secret ``stored`` holds. A value written before encryption existed (no prefix) is its own secret."""
    if not stored or not is_sealed(stored):
        return stored
    try:
        return _box().decrypt(stored.removeprefix(PREFIX).encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise CannotOpen("cannot be decrypted with GRADEQUEUE_ENCRYPTION_KEY (was the key changed?)") from exc
