"""drf-spectacular hooks: only ``/api/v1/`` is described (the XQueue endpoints speak their envelope), and
every operation documents the problem-details answers it can give."""

from __future__ import annotations

from typing import Any

PROBLEMS = {
    "400": "The request is not valid (the body or a parameter); `errors` says which field.",
    "401": "No token, or an invalid, expired or revoked one.",
    "403": "The token's account may not do this.",
    "404": "No such object, or not visible to this token.",
    "405": "Method not allowed.",
    "406": "Only JSON answers can be produced.",
    "409": "The submission's status does not allow the action.",
    "415": "Unsupported request body type.",
    "503": "The database is unavailable; try again.",
}


def only_the_json_api(endpoints: list[tuple[str, str, str, Any]], **kwargs: Any) -> list[tuple[str, str, str, Any]]:
    return [e for e in endpoints if e[0].startswith("/api/v1/") and "/schema/" not in e[0]]


def problem_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {},
        },
        "required": ["type", "title", "status", "detail"],
    }
    ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            for code, text in PROBLEMS.items():
                operation.setdefault("responses", {}).setdefault(code, {"description": text, "content": ref})
    return result
