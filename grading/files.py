"""Submission files: stored through Django's storage API, handed to graders as expiring URLs.

The client's file name is never used as a storage path: each submission's files go under a fresh random
folder, under a sanitised name. On S3-compatible storage graders get presigned URLs; on local storage
they get a gradequeue download URL carrying a signed, expiring token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable
from typing import Any

from django.core import signing
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from django.utils.text import get_valid_filename

from grading.conf import setting

logger = logging.getLogger("grading.files")

SALT = "gradequeue.files"
FOLDER = "submissions"


class FileLimitError(ValueError):
    """A submission's files break a configured limit; the message names the limit."""


def too_many_files_message(count: int | None = None) -> str:
    limit = int(setting("MAX_FILES"))
    if count is None:
        return f"Too many files (limit {limit})"
    return f"Too many files: {count} (limit {limit})"


def check_limits(files: Iterable[UploadedFile], count: int | None = None) -> None:
    """Refuse more than MAX_FILES files or a file over MAX_FILE_BYTES. ``count`` counts every file part."""
    files = list(files)
    count = len(files) if count is None else count
    max_bytes = int(setting("MAX_FILE_BYTES"))
    if count > int(setting("MAX_FILES")):
        raise FileLimitError(too_many_files_message(count))
    for f in files:
        if f.size is not None and f.size > max_bytes:
            raise FileLimitError(f"File '{f.name}' is too large: {f.size} bytes (limit {max_bytes} bytes)")


def safe_name(name: str) -> str:
    """A file name that is safe in a storage path and a URL: no folders, no leading dots, no odd characters."""
    base = os.path.basename(name.replace("\\", "/")).strip()
    try:
        cleaned = get_valid_filename(base)
    except Exception:
        cleaned = ""
    cleaned = cleaned.lstrip(".")[:100]
    return cleaned or "file"


def store(uploads: dict[str, UploadedFile]) -> dict[str, str]:
    """Save every upload; on any failure delete what was saved, so nothing is half-stored."""
    # An unguessable folder per submission: no collisions between submissions, nothing to enumerate.
    folder = f"{FOLDER}/{secrets.token_hex(16)}"
    saved: dict[str, str] = {}
    try:
        for index, (field, upload) in enumerate(uploads.items()):
            path = f"{folder}/{index}-{safe_name(field)}"
            saved[field] = default_storage.save(path, upload)
    except Exception:
        delete(saved.values())
        raise
    return saved


def delete(paths: Iterable[str]) -> list[str]:
    """Delete stored files (a missing file is not an error). Returns the paths that could not be deleted."""
    failed = []
    folders = set()
    for path in paths:
        try:
            default_storage.delete(path)
        except Exception:
            logger.warning("could not delete stored file %s", path, exc_info=True)
            failed.append(path)
            continue
        folders.add(os.path.dirname(path))
    _remove_empty_folders(folders)
    return failed


def _remove_empty_folders(folders: Iterable[str]) -> None:
    # Object stores have no folders; on a filesystem, leave no empty per-submission folder behind.
    if not isinstance(default_storage, FileSystemStorage):
        return
    for folder in folders:
        if not folder.startswith(FOLDER + "/"):
            continue
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(default_storage.path(folder))


def _is_remote(storage: Any) -> bool:
    return hasattr(storage, "bucket_name")


def urls_for(files: dict[str, str], base_url: str) -> dict[str, str]:
    """Absolute, expiring download URLs for a submission's files, keyed by their names."""
    if not files:
        return {}
    seconds = int(setting("FILE_URL_SECONDS"))
    if _is_remote(default_storage):
        return {name: default_storage.url(path, expire=seconds) for name, path in files.items()}  # type: ignore[call-arg]
    urls = {}
    for name, path in files.items():
        token = signing.dumps(path, salt=SALT, compress=False)
        urls[name] = base_url.rstrip("/") + reverse("xqueue-file", args=[token, safe_name(name)])
    return urls


def path_from_token(token: str) -> str:
    """The storage path a download token grants; raises signing.BadSignature (or SignatureExpired)."""
    return str(signing.loads(token, salt=SALT, max_age=int(setting("FILE_URL_SECONDS"))))
