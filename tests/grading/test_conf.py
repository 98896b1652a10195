"""The GRADEQUEUE settings: every default written once, in config/settings.py, and every name the code
reads defined there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from grading.conf import setting

ROOT = Path(__file__).resolve().parents[2]
READ = re.compile(r"""\bsetting\(\s*["']([A-Z_]+)["']\s*\)""")


def names_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for folder in ("grading", "tasks", "config"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(READ.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_name_the_code_reads_is_defined_in_the_settings_dict(settings: Any) -> None:
    read = names_read_by_the_code()
    # The scan finds the reads (a broken pattern would find none and pass).
    assert {"LEASE_SECONDS", "EMPTY_POLL_WAIT", "MAX_FILE_BYTES", "CALLBACK_HOSTS"} <= read
    assert sorted(read - set(settings.GRADEQUEUE)) == []


def test_a_name_missing_from_the_settings_dict_is_a_configuration_error_naming_it(settings: Any) -> None:
    settings.GRADEQUEUE = {k: v for k, v in settings.GRADEQUEUE.items() if k != "SCORE_BATCH"}
    with pytest.raises(ImproperlyConfigured) as raised:
        setting("SCORE_BATCH")
    assert str(raised.value) == "GRADEQUEUE['SCORE_BATCH'] is not set (config/settings.py defines every key)"


def test_a_value_comes_from_the_settings_dict(settings: Any) -> None:
    settings.GRADEQUEUE = {**settings.GRADEQUEUE, "SCORE_BATCH": 7}
    assert setting("SCORE_BATCH") == 7
