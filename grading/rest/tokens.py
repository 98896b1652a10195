"""Issuing, revoking and checking the JSON API's bearer tokens (``grading.models.ApiToken``)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.utils import timezone

from grading.models import ApiToken

PREFIX = "gqt_"
# How often a token's last use is written back: a token used by a busy script costs one UPDATE a minute.
LAST_USED_EVERY = timedelta(seconds=60)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue(user: Any, *, name: str = "", days: float | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user``, valid ``days`` (None: until revoked). Returns the row and the token text,
    which is not stored anywhere and cannot be shown again."""
    token = PREFIX + secrets.token_urlsafe(32)
    expires = timezone.now() + timedelta(days=days) if days else None
    row = ApiToken.objects.create(user=user, name=name, prefix=token[:12], digest=digest(token), expires_at=expires)
    return row, token


def revoke(prefix: str) -> int:
    """Revoke the tokens whose text starts with ``prefix`` (as listed); returns how many were revoked."""
    return ApiToken.objects.filter(prefix=prefix[:12], revoked_at__isnull=True).update(revoked_at=timezone.now())


def check(token: str) -> ApiToken | None:
    """The live token row for this token text, with its user; None for an unknown, revoked or expired one."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = ApiToken.objects.select_related("user").filter(digest=digest(token)).first()
    now = timezone.now()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if not row.user.is_active:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row
