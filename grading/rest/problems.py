"""Errors as RFC 9457 problem details: ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` (and ``errors``, field by field, for invalid input)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.response import Response

logger = logging.getLogger("grading.rest")
MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, *, errors: Any = None, headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    response = Response(body, status=status, headers=headers, content_type=MEDIA_TYPE)
    return response


def _detail(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_detail(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}: {_detail(v)}" for k, v in value.items())
    return str(value)


def handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler for the JSON API's views."""
    if isinstance(exc, Http404):
        return problem(404, "Not found.")
    if isinstance(exc, PermissionDenied):
        return problem(403, "You do not have permission to perform this action.")
    if isinstance(exc, exceptions.ValidationError):
        return problem(400, "The request is not valid: " + _detail(exc.detail), errors=exc.detail)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
        return problem(exc.status_code, _detail(exc.detail), headers=headers)
    if isinstance(exc, DatabaseError):
        logger.error("database error in %s: %s", context.get("view").__class__.__name__, exc)
        return problem(503, "The database is unavailable; try again shortly.", headers={"Retry-After": "5"})
    return None


class ProblemSerializer(serializers.Serializer):
    """The body of every error answer (for the schema)."""

    type = serializers.CharField(default="about:blank")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.JSONField(required=False)
