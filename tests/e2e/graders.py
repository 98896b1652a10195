"""Grading functions for the Celery-grader tests, with xqueue-watcher's handler contract.

The test starts the real grader entry point (``python -m gradequeue_grader``) with one of these.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def grade(content: dict[str, str]) -> dict[str, Any]:
    """Right answer "42". "slow" takes a minute the first time (leaving a marker that grading started)."""
    header = json.loads(content["xqueue_header"])
    body = json.loads(content["xqueue_body"])
    response = body["student_response"]
    if response == "slow":
        marker = Path(os.environ["GRADER_MARKER_DIR"]) / f"started-{header['submission_id']}"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(60)
    correct = response == "42"
    return {"correct": correct, "score": 1.0 if correct else 0.0, "msg": f"<p>You answered {response}.</p>"}


def trivial(content: dict[str, str]) -> dict[str, Any]:
    """As cheap as grading gets: for measuring the pipeline, not the grader."""
    return {"correct": True, "score": 1.0, "msg": "<p>ok</p>"}


# A reply that makes every JSON parser recurse 100 000 levels deep (100 KB, under the body limit).
POISON_REPLY = "[" * 100_000
# A grade whose POST to the LMS raises (tests.e2e.test_poison makes the HTTP client raise on it).
RAISE_ON_POST_MSG = "<p>raise-on-post</p>"


def hostile(content: dict[str, str]) -> Any:
    """``grade``, except that the answer "poison" gets POISON_REPLY and "raise" a grade with RAISE_ON_POST_MSG."""
    response = json.loads(content["xqueue_body"])["student_response"]
    if response == "poison":
        return POISON_REPLY
    if response == "raise":
        return {"correct": True, "score": 1.0, "msg": RAISE_ON_POST_MSG}
    return grade(content)
