"""The one rule for text that gradequeue stores, on every way in (the XQueue endpoints, the JSON API, imports).

Text may hold any Unicode character except NUL (U+0000) and lone surrogates (U+D800-U+DFFF without their
pair): PostgreSQL refuses NUL in text and JSON, and no database can store half a surrogate pair in UTF-8.
SQLite and MySQL/MariaDB, which could store a NUL, refuse it the same way, so that a request is accepted or
refused alike on every database.
"""

from __future__ import annotations

import re
from typing import Any

# Both kinds of character refused in any text: NUL, and a surrogate code point (a pair decodes to one
# character outside the BMP, so any surrogate left in a Python string is a lone one).
_REFUSED = re.compile("[\x00\ud800-\udfff]")


class Refused(Exception):
    """The text is refused; ``str(exc)`` names the field and the character, for the client."""


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


def check_json_strings(field: str, obj: dict[str, Any]) -> None:
    """Refuse a parsed JSON object whose keys or string values, at any depth, hold a refused character.

    Iterative, so an object as deep as the parser allowed cannot exhaust the stack here.
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
    """A key as it may appear inside a message: short, refused characters replaced."""
    return _REFUSED.sub("\ufffd", key)[:64]
