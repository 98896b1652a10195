"""Session authentication for the XQueue API accounts.

Real clients cannot be asked for CSRF tokens: old xqueue-watchers send none (and no Referer), the LMS
sends none. The API endpoints are csrf-exempt; a token that a 2026 watcher does send is simply not needed.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import SessionAuthentication


class SessionAuthenticationNoCsrf(SessionAuthentication):
    def enforce_csrf(self, request: Any) -> None:
        return None
