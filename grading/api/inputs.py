"""What the XQueue endpoints accept, decided here, at the edge, the same way on every database.

- Text may hold any Unicode character except NUL (U+0000) and lone surrogates (U+D800-U+DFFF without their
  pair): PostgreSQL refuses NUL in text and JSON, and no database can store half a surrogate pair in UTF-8.
  A request carrying one is refused with a message naming the field, before anything is stored; SQLite and
  MySQL/MariaDB, which could store a NUL, refuse it the same way.
- JSON headers are parsed with their nesting bounded by the interpreter: a header too deep to parse is an
  invalid header, not a crash.
- A form field must be a form field: a file part sent under a field's name is a missing field.
- ``submission_id`` is a plain decimal integer (ASCII digits, at most 18 of them) or a JSON integer.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Both kinds of character refused in any text: NUL, and a surrogate code point (a pair decodes to one
# character outside the BMP, so any surrogate left in a Python string is a lone one).
_REFUSED = re.compile("[\x00\ud800-\udfff]")
_DECIMAL = re.compile(r"[0-9]{1,18}")


class Refused(Exception):
    """The request is refused; ``str(exc)`` is the envelope's content."""


def character_problem(text: str) -> str | None:
    """What refused character ``text`` holds ("a NUL character (U+0000)"), or None."""
    found = _REFUSED.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "a NUL character (U+0000)"
    return f"a lone surrogate (U+{ord(char):04X})"


def check_text(label: str, text: str) -> None:
    """Raise ``Refused`` when ``text`` holds a refused character; ``label`` names the field."""
    problem = character_problem(text)
    if problem is not None:
        raise Refused(f"{label} contains {problem}, which is not accepted")


def form_text(data: Any, name: str) -> str | None:
    """The text of form field ``name``: None when missing or sent as a file part; refused characters raise."""
    value = data.get(name)
    if not isinstance(value, str):
        return None
    check_text(f"'{name}'", value)
    return value


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object, or None (not JSON, not an object, or nested too deep to parse)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def check_json_strings(field: str, obj: dict[str, Any]) -> None:
    """Refuse a parsed header whose keys or string values, at any depth, hold a refused character.

    Iterative, so a header as deep as the parser allowed cannot exhaust the stack here.
    """
    for key, value in obj.items():
        label = f"'{field}' key '{ascii_label(key)}'"
        check_text(f"A key of '{field}'", key)
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                check_text(label, item)
            elif isinstance(item, dict):
                for inner_key, inner in item.items():
                    check_text(label, inner_key)
                    stack.append(inner)
            elif isinstance(item, list):
                stack.extend(item)


def ascii_label(key: str) -> str:
    """A header key as it may appear inside a message: short, refused characters replaced."""
    return _REFUSED.sub("\ufffd", key)[:64]


def submission_id(value: Any) -> int | None:
    """A submission id from a grader's header: a JSON integer or ASCII decimal text, else None.

    ``str.isdigit`` accepts ``²`` and ``①``, which ``int()`` refuses, and 5 000 digits exceed the interpreter's
    conversion limit; neither can name a submission.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 2**62 else None
    if isinstance(value, str):
        text = value.strip(" \t\r\n")
        if _DECIMAL.fullmatch(text):
            return int(text)
    return None
