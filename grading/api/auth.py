"""Session authentication for the XQueue API accounts.

Real clients cannot be asked for CSRF tokens: old xqueue-watchers send none (and no Referer), the LMS
sends none. The API endpoints are csrf-exempt; a token that a 2026 watcher does send is simply not needed.

Only API accounts act on the API, and only through their queue grants: a staff or superuser session (the
admin's) counts as not logged in here, so a stolen or forgotten admin browser session is no LMS or grader
credential, and an admin cannot submit or grade by accident.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import SessionAuthentication


def is_api_account(user: Any) -> bool:
    """Whether ``user`` may act on the XQueue API at all: an active account that is neither staff nor superuser."""
    return bool(user is not None and user.is_active and not user.is_staff and not user.is_superuser)


class SessionAuthenticationNoCsrf(SessionAuthentication):
    def authenticate(self, request: Any) -> Any:
        found = super().authenticate(request)
        if found is None or not is_api_account(found[0]):
            return None  # answered like any unauthenticated call: 302 to the login page
        return found

    def enforce_csrf(self, request: Any) -> None:
        return None
