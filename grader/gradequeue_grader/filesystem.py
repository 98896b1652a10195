"""kombu's filesystem transport (development), with messages written atomically.

Upstream writes a message file in place (create, then write), while a consumer in another process may already
move and read the still-empty file: a Celery worker then dies on a JSON error. Here a message is written to a
scratch folder on the same filesystem and renamed into the queue folder, so a consumer sees a whole message or
nothing.

Installed by naming it as the broker transport, ``broker_transport`` = :data:`TRANSPORT` (gradequeue's
settings: ``CELERY_BROKER_TRANSPORT``), for a ``filesystem://`` broker URL: gradequeue's processes and the
grader SDK's worker use this one class.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

TRANSPORT = "gradequeue_grader.filesystem:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        # Consumers list the queue folder for "<stamp>.<queue>.msg" files: the scratch folder is never one.
        scratch = os.path.join(self.data_folder_out, ".incoming")
        os.makedirs(scratch, exist_ok=True)
        staged = os.path.join(scratch, name)
        try:
            with open(staged, "wb") as f:
                f.write(dumps(message).encode("utf-8"))
            os.replace(staged, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
