"""Credential checks that answer within xqueue-watcher's 1-second request timeout.

Machine secrets (``create_account --generate-secret``, ``grading.credentials``) are checked by one keyed
hash, in microseconds, with no cache involved. They are checked here and never handed to Django's
``check_password``, which would re-hash a correct one with the default hasher.

Passwords people chose keep Django's default hasher (PBKDF2, a million rounds: 0.3-0.6 s on a 2-core
machine, and more under load). Graders log in again and again with the same credentials, so after one full
check this backend remembers, for a while, a keyed digest of the credentials together with the account's
current password hash. A changed password or a deactivated account no longer matches; the cache never holds
the password itself.

Every request of a polling grader also loads its account from the session (``get_user``). That is served from
the cache too (Redis in production, and for a few seconds from the process itself, ``grading.localcache``)
instead of a query per request; saving or deleting the account forgets the entry at once, and Django still
checks the session's password hash against it, so a password change logs the account's sessions out as before.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache

from grading import credentials, localcache
from grading.conf import setting


def _storable(text: str) -> bool:
    """Whether the database can hold (and so look up) ``text``: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cache_get(key: str) -> Any:
    # Only a shortcut: with the cache unreachable, logins take the full check.
    try:
        return cache.get(key)
    except Exception:
        return None


def _cache_set(key: str, value: Any, timeout: int) -> None:
    try:
        cache.set(key, value, timeout=timeout)
    except Exception:
        return


def _key(username: str, password: str) -> str:
    message = f"{username}\0{password}".encode("utf-8", "surrogatepass")
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256)
    return "gradequeue:credentials:" + digest.hexdigest()


class CachedCredentialsBackend(ModelBackend):
    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        if not _storable(username) or not _storable(password.replace("\x00", "")):
            return None  # no account can have such a name, nor any hash be made of such a password
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is not None and credentials.is_machine_hash(user.password):
            if credentials.check(password, user.password) and self.user_can_authenticate(user):
                return user
            return None
        key = _key(username, password)
        remembered = _cache_get(key)
        if (
            user is not None
            and remembered is not None
            and remembered[0] == user.pk
            and hmac.compare_digest(user.password, remembered[1])
            and self.user_can_authenticate(user)
        ):
            return user
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            _cache_set(key, (user.pk, user.password), int(setting("LOGIN_CACHE_SECONDS")))
        return user

    def get_user(self, user_id: Any) -> Any:
        ttl = float(setting("ACCESS_CACHE_SECONDS"))
        key = _user_key(user_id)
        user = localcache.get(key)
        if user is None and ttl > 0:
            user = cache.get(key)
            if user is not None:
                localcache.put(key, _with_fixed_session_hash(user))
        if user is not None:
            # A copy: the request may change its user (last_login); the cached one stays as stored.
            return copy_user(user) if self.user_can_authenticate(user) else None
        user = super().get_user(user_id)
        if user is not None and ttl > 0:
            cache.set(key, user, ttl)
            localcache.put(key, _with_fixed_session_hash(copy_user(user)))
        return user


def copy_user(user: Any) -> Any:
    """A shallow copy of a model instance, as ``copy.copy`` makes it (Model.__getstate__: its own state and
    related-object cache), without the pickling protocol that made ``copy.copy`` cost more than the rest
    of the look-up."""
    clone = object.__new__(type(user))
    clone.__dict__.update(user.__dict__)
    clone._state = copy.copy(user._state)
    clone._state.fields_cache = user._state.fields_cache.copy()
    return clone


class _FixedSessionHash:
    """``get_session_auth_hash`` of one account, computed once (it is an HMAC of the password hash)."""

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __call__(self) -> str:
        return self.digest


def _with_fixed_session_hash(user: Any) -> Any:
    """Django checks every request's session against ``user.get_session_auth_hash()``, an HMAC that costs
    more than the rest of the session and account look-up. The process's copy of an account keeps the
    result; it changes only with the password hash, and saving the account forgets the copy."""
    user.get_session_auth_hash = _FixedSessionHash(user.get_session_auth_hash())
    return user


def _user_key(user_id: Any) -> str:
    return f"gradequeue:user:{user_id}"


def only_last_login(update_fields: Any) -> bool:
    """Whether a save wrote nothing but ``last_login`` (what every login does): no cached copy needs forgetting
    for that, and forgetting it would send every thread of a watcher that just logged in back to the database."""
    return update_fields is not None and set(update_fields) == {"last_login"}


def _forget_user(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if only_last_login(update_fields):
        return
    localcache.forget(_user_key(instance.pk))
    cache.delete(_user_key(instance.pk))


def connect_signals() -> None:
    from django.db.models.signals import post_delete, post_save

    user_model = get_user_model()
    post_save.connect(_forget_user, sender=user_model, dispatch_uid="gradequeue-auth-user-save")
    post_delete.connect(_forget_user, sender=user_model, dispatch_uid="gradequeue-auth-user-delete")
