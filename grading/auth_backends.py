"""Password checks that answer within xqueue-watcher's 1-second request timeout.

Django's default hasher (PBKDF2, a million rounds) takes 0.3-0.6 s on a 2-core machine, and more under load;
a watcher whose login misses its 1 s timeout dies with its thread. Graders log in again and again with the
same credentials, so after one full check this backend remembers, for a while, a keyed digest of the
credentials together with the account's current password hash. A changed password or a deactivated account
no longer matches; the cache never holds the password itself.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache

from grading.conf import setting


def _key(username: str, password: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"{username}\0{password}".encode(), hashlib.sha256)
    return "gradequeue:credentials:" + digest.hexdigest()


class CachedCredentialsBackend(ModelBackend):
    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if username is None or password is None:
            return None
        key = _key(username, password)
        remembered = cache.get(key)
        if remembered is not None:
            user_id, password_hash = remembered
            user = get_user_model()._default_manager.filter(pk=user_id).first()
            if (
                user is not None
                and hmac.compare_digest(user.password, password_hash)
                and self.user_can_authenticate(user)
            ):
                return user
            cache.delete(key)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            cache.set(key, (user.pk, user.password), timeout=int(setting("LOGIN_CACHE_SECONDS")))
        return user
