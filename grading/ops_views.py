"""Operator endpoints: Prometheus metrics, readiness, and the live status page.

None of these are part of the XQueue protocol, so they answer in plain HTTP terms (403, 503) rather than
with the protocol's envelope.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from grading import health, metrics, stats
from grading.conf import setting

# --- Metrics ---------------------------------------------------------------------------------------


def _token_matches(request: HttpRequest) -> bool:
    token = str(setting("METRICS_TOKEN") or "")
    auth = request.headers.get("Authorization", "")
    return bool(token) and auth.startswith("Bearer ") and secrets.compare_digest(auth[7:].strip(), token)


def metrics_allowed(request: HttpRequest) -> bool:
    """A matching bearer token (when one is configured), or a client address in the allowed networks."""
    if _token_matches(request):
        return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    for network in setting("METRICS_ALLOWED_NETWORKS") or []:
        if client in ipaddress.ip_network(network, strict=False):
            return True
    return False


def metrics_exposure_warning() -> str:
    """What is wrong with who may read /metrics in production ("" in development, or when all is well)."""
    if setting("DEVELOPMENT") or setting("METRICS_TOKEN"):
        return ""
    networks = list(setting("METRICS_ALLOWED_NETWORKS") or [])
    if not networks:
        return (
            "/metrics is closed to everyone: GRADEQUEUE_METRICS_TOKEN is not set (set it, and give Prometheus "
            "the token)"
        )
    return (
        f"/metrics is open without a token to {', '.join(networks)} (GRADEQUEUE_METRICS_ALLOWED_NETWORKS): "
        "behind a reverse proxy on those addresses that is everyone; set GRADEQUEUE_METRICS_TOKEN and drop the "
        "networks"
    )


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        response = HttpResponse(
            "Forbidden: metrics need a bearer token or an allowed address.\n", status=403, content_type="text/plain"
        )
        if setting("METRICS_TOKEN"):
            response["WWW-Authenticate"] = 'Bearer realm="gradequeue metrics"'
        return response
    body, content_type = metrics.render(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)


# --- Readiness -------------------------------------------------------------------------------------


def _may_see_details(request: HttpRequest) -> bool:
    """Error texts name hosts, ports and users: only staff (an admin session) and the metrics token see them."""
    if _token_matches(request):
        return True
    try:
        return bool(request.user.is_staff)
    except Exception:  # the session cannot be read (the database is down): anonymous
        return False


def _summary(check: health.Check) -> str:
    if check.ok:
        return "ok"
    return "unavailable" if check.required else "degraded"


@never_cache
@require_GET
def ready_view(request: HttpRequest) -> JsonResponse:
    checks = health.readiness()
    ready = all(c.ok for c in checks if c.required)
    details = _may_see_details(request)
    return JsonResponse(
        {
            "ready": ready,
            "failing": [c.name for c in checks if c.required and not c.ok],
            "degraded": [c.name for c in checks if not c.required and not c.ok],
            "checks": {
                c.name: {"ok": c.ok, "detail": c.detail if details else _summary(c), "duration_ms": c.duration_ms}
                for c in checks
            },
        },
        status=200 if ready else 503,
    )


# --- Status page -----------------------------------------------------------------------------------

CHART_WIDTH = 240
CHART_HEIGHT = 48
WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Chart:
    waiting_points: str
    leased_points: str
    peak: int
    samples: int


def _chart(points: list[stats.DepthPoint], current: stats.QueueStats, now: Any) -> Chart:
    """SVG polyline coordinates for waiting and leased over the last hour, ending with the current depth."""
    series = [*points, stats.DepthPoint(now, current.waiting, current.leased)]
    peak = max(max(p.waiting, p.leased) for p in series)
    scale = max(peak, 1)
    start = now - WINDOW

    def coords(attr: str) -> str:
        out = []
        for p in series:
            x = (p.at - start).total_seconds() / WINDOW.total_seconds() * CHART_WIDTH
            y = CHART_HEIGHT - getattr(p, attr) / scale * (CHART_HEIGHT - 2) - 1
            out.append(f"{max(0.0, x):.1f},{y:.1f}")
        return " ".join(out)

    return Chart(coords("waiting"), coords("leased"), peak, len(points))


@never_cache
@staff_member_required
def status_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = stats.queue_stats(now=now)
    history = stats.depth_history([r.queue_id for r in rows], since=now - WINDOW, now=now)
    queues = [
        {
            "stats": r,
            "oldest": stats.format_age(r.oldest_age_seconds),
            "chart": _chart(history[r.queue_id], r, now),
        }
        for r in rows
    ]
    context = {
        "queues": queues,
        "now": now,
        "totals": {
            "waiting": sum(r.waiting for r in rows),
            "leased": sum(r.leased for r in rows),
            "failed": sum(r.failed for r in rows),
            "dead_letter": sum(r.dead_letter for r in rows),
        },
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "refresh_seconds": 15,
    }
    return render(request, "grading/status.html", context)
