"""Grades: whether a grader's reply is a grade the LMS can use, and the notice sent when there is none.

The lifecycle (``grading.lifecycle``) scores with :func:`validate_grade`: a usable reply becomes the LMS
body, anything else fails the submission, which the LMS is then sent :func:`not_graded_notice` for.
"""

from __future__ import annotations

import json

NOT_GRADED_MSG = (
    '<div class="capa_alert">Your submission could not be graded. '
    "Please try again later, or contact the course staff if this keeps happening.</div>"
)


def not_graded_notice() -> str:
    """The xqueue_body sent to the LMS when a submission cannot be graded at all."""
    return json.dumps({"correct": None, "score": 0, "msg": NOT_GRADED_MSG})


def validate_grade(reply: str) -> str | None:
    """Why the LMS could not use this grader reply, or None if it can. Never raises, whatever ``reply`` is."""
    try:
        return _check_grade(reply)
    except Exception as exc:  # a reply must never stop scoring: whatever else it breaks, it is unusable
        return f"{NOT_CHECKED} ({type(exc).__name__})"


NESTED_TOO_DEEPLY = "the reply is nested too deeply"
NOT_CHECKED = "the reply could not be checked"


def _check_grade(reply: str) -> str | None:
    try:
        grade = json.loads(reply)
    except RecursionError:
        # "[" * 100000 (json's C scanner recurses per level): under the body limit, and no grade.
        return NESTED_TOO_DEEPLY
    except (TypeError, ValueError):
        return "the reply is not JSON"
    if not isinstance(grade, dict):
        return "the reply is not a JSON object"
    missing = [k for k in ("correct", "score", "msg") if k not in grade]
    if missing:
        return "the reply lacks " + ", ".join(missing)
    if grade["correct"] is not None and not isinstance(grade["correct"], bool):
        return "'correct' is not true, false or null"
    score = grade["score"]
    if (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or score != score
        or score
        in (
            float("inf"),
            float("-inf"),
        )
    ):
        return "'score' is not a finite number"
    if not isinstance(grade["msg"], str):
        return "'msg' is not a string"
    return None
