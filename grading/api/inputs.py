"""What the XQueue endpoints accept in their form fields, decided here, at the edge, the same way on every
database.

- Text follows ``grading.text``'s rule (no NUL, no lone surrogate), the one rule for every way in: a request
  carrying one is refused with a message naming the field, before anything is stored.
- A form field must be a form field: a file part sent under a field's name is a missing field.
- Headers are parsed by ``grading.headers``.
"""

from __future__ import annotations

from typing import Any

from grading import text


def form_text(data: Any, name: str) -> str | None:
    """The text of form field ``name``: None when missing or sent as a file part; refused characters raise."""
    value = data.get(name)
    if not isinstance(value, str):
        return None
    text.check_text(f"'{name}'", value)
    return value
