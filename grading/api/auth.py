"""Authentication for the XQueue API accounts.

Real clients cannot be asked for CSRF tokens: old xqueue-watchers send none (and no Referer), the LMS
sends none. The API endpoints are csrf-exempt; a token that a 2026 watcher does send is simply not needed.

Every request of a polling grader loads its account from the session. ``CachedModelBackend`` keeps that
account in Django's cache (Redis in production, and for a few seconds in the process) instead of
querying it each time; saving or deleting the
account forgets the entry at once, and Django still checks the session's password hash against it, so a
password change logs the account's sessions out as before.
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from rest_framework.authentication import SessionAuthentication

from grading import localcache
from grading.conf import setting


class SessionAuthenticationNoCsrf(SessionAuthentication):
    def enforce_csrf(self, request: Any) -> None:
        return None


def _user_key(user_id: Any) -> str:
    return f"gradequeue:user:{user_id}"


class CachedModelBackend(ModelBackend):
    """Django's ModelBackend, with ``get_user`` (run on every authenticated request) served from the cache."""

    def get_user(self, user_id: Any) -> Any:
        ttl = float(setting("ACCESS_CACHE_SECONDS"))
        key = _user_key(user_id)
        user = localcache.get(key)
        if user is None and ttl > 0:
            user = cache.get(key)
            if user is not None:
                localcache.put(key, user)
        if user is not None:
            # A copy: the request may change its user (last_login), the cached one stays as stored.
            return copy.copy(user) if self.user_can_authenticate(user) else None
        user = super().get_user(user_id)
        if user is not None and ttl > 0:
            cache.set(key, user, ttl)
            localcache.put(key, copy.copy(user))
        return user


def _forget_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    localcache.forget(_user_key(instance.pk))
    cache.delete(_user_key(instance.pk))


def connect_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save

    user_model = get_user_model()
    post_save.connect(_forget_user, sender=user_model, dispatch_uid="gradequeue-auth-user-save")
    post_delete.connect(_forget_user, sender=user_model, dispatch_uid="gradequeue-auth-user-delete")
