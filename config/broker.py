"""kombu's filesystem transport, with messages written atomically.

Upstream writes a message file in place (create, then write), while a consumer may already move and read the
still-empty file: the worker then dies on a JSON error. Here a message is written to a scratch folder on the
same filesystem and renamed into the queue folder, so a consumer sees a whole message or nothing.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
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


def install() -> None:
    """Make ``filesystem://`` broker URLs use this transport."""
    TRANSPORT_ALIASES["filesystem"] = "config.broker:Transport"
