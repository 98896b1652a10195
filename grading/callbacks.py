"""Which LMS callback URLs gradequeue will POST grades to.

A grading service that POSTs wherever a submission tells it to is a request forgery tool. The operator
lists the hosts grades may go to (``GRADEQUEUE["CALLBACK_HOSTS"]``: host names or glob patterns such as
``*.lms.example.org``); a submission whose callback is elsewhere is refused at submit time, before
anything is stored.
"""

from __future__ import annotations

import fnmatch
import urllib.parse

from urllib3.util import parse_url

from grading.conf import setting


def _host(url: str) -> str | None:
    """The callback's host name, lower-case, or None when the URL is not one we will POST to.

    URLs with credentials, backslashes, whitespace or control characters are refused outright: those
    are where URL parsers disagree, and the host checked here must be the host the HTTP client connects to.
    """
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        client_view = parse_url(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    del port
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".").lower()
    client_host = (client_view.host or "").strip("[]").rstrip(".").lower()
    if client_host != host:
        return None
    return host


def allowed_patterns() -> list[str]:
    """The allow-list, lower-case; an IPv6 address may be written with or without its brackets."""
    patterns = []
    for raw in setting("CALLBACK_HOSTS"):
        pattern = raw.strip().lower()
        if pattern.startswith("[") and pattern.endswith("]") and ":" in pattern:
            pattern = pattern[1:-1]
        if pattern:
            patterns.append(pattern)
    return patterns


def refusal(url: str) -> str | None:
    """Why grades may not be posted to ``url`` (a message for the LMS), or None when they may."""
    host = _host(url)
    if host is None:
        return "Callback URL not allowed: it must be a plain http(s) URL with a host name"
    if any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed_patterns()):
        return None
    return f"Callback URL not allowed: host '{host}' is not on this server's callback allow-list"
