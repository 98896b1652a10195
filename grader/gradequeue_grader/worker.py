"""Run a Celery-queue grader for gradequeue: one command, one grading function, broker access only.

    python -m gradequeue_grader --queue my-course-queue --function mygrader:grade \\
        --broker amqp://grader-user:secret@mq.example.org:5672/gradequeue --concurrency 4

The function has the contract of an xqueue-watcher handler. It is called with one dict of three strings,
exactly as xqueue-watcher passes ``get_submission``'s content to its handlers::

    {"xqueue_header": "<JSON text>", "xqueue_body": "<the LMS's body>", "xqueue_files": "<JSON {name: url}>"}

and returns the grade, ``{"correct": bool, "score": number, "msg": "<html>"}`` (a dict, or JSON text). A
falsy return sends nothing, and an exception is logged and sends nothing: either way the submission comes
back to a grader when its lease expires, as with xqueue-watcher.

gradequeue publishes each submission of a queue in ``celery`` mode as a ``gradequeue.grade`` task message
on the broker queue named after that queue; this worker consumes it and sends the reply back as a
``grading.record_result`` task message on gradequeue's own queue. Everything else — the lease, a late
reply being refused, scoring, delivery to the LMS — happens in gradequeue.

The message names and shapes are :mod:`gradequeue_grader.protocol`'s, which gradequeue imports too. This
package needs only Celery (no Django, no gradequeue settings): a grader machine installs it on its own
(``pip install ./grader`` from a gradequeue checkout).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange
from kombu import Queue as BrokerQueue

from gradequeue_grader import filesystem
from gradequeue_grader.protocol import DEFAULT_REPLY_TO, GRADE_TASK, RECORD_TASK, ReplyRoute, reply_args

logger = logging.getLogger("gradequeue_grader")

GradingFunction = Callable[[dict[str, str]], Any]


def load_function(spec: str) -> GradingFunction:
    """Resolve ``package.module:attribute`` (the attribute may be dotted, e.g. ``mod:grader.process_item``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--function must look like package.module:function, not {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]


def _broker_options(broker: str, folder: str | None) -> dict[str, Any]:
    if not broker.startswith("filesystem://"):
        return {}
    # kombu's filesystem transport (development): the folder gradequeue's own processes use.
    path = Path(folder or os.environ.get("GRADEQUEUE_BROKER_DIR", "var/broker"))
    (path / "processed").mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(path),
        "data_folder_out": str(path),
        "processed_folder": str(path / "processed"),
        "control_folder": str(path / "control"),
        "store_processed": False,
    }


def make_app(queue: str, function: GradingFunction, broker: str, *, broker_folder: str | None = None) -> Celery:
    """A Celery app whose worker consumes ``queue`` and grades each submission with ``function``."""
    # No fixups: a grader that happens to run beside a Django project must not start that project.
    app = Celery(f"gradequeue-grader-{queue}", broker=broker, set_as_current=False, fixups=[])
    app.conf.update(
        # Pinned: Celery otherwise lets a CELERY_BROKER_URL in the environment override the broker given.
        broker_read_url=broker,
        broker_write_url=broker,
        broker_transport_options=_broker_options(broker, broker_folder),
        # kombu's filesystem transport with messages written whole, as gradequeue's own processes use it.
        broker_transport=filesystem.TRANSPORT if broker.startswith("filesystem://") else None,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # A grader killed mid-grade leaves its message unacknowledged: the broker hands it to another grader
        # while the lease lasts; after that the message has expired and gradequeue has dispatched it anew.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message per process at a time: a long grade does not hold back others' work.
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        task_queues=[BrokerQueue(queue, Exchange(queue, type="direct"), routing_key=queue)],
        # Graders get broker permissions for their own queue only: no remote control, no events.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    named_exchanges = app.connection_for_write().transport.driver_type == "amqp"

    def send_reply(reply_to: ReplyRoute | None, args: list[int | str]) -> None:
        route = reply_to or DEFAULT_REPLY_TO
        # Straight to gradequeue's exchange, declaring nothing: write permission on it is all it takes.
        # Redis and the filesystem transport route by queue name instead.
        target: dict[str, Any] = (
            {"exchange": route["exchange"], "routing_key": route["routing_key"]}
            if named_exchanges
            else {"queue": route["routing_key"]}
        )
        app.send_task(RECORD_TASK, args=args, declare=[], **target)

    @app.task(name=GRADE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def grade(
        self: Any,
        submission_id: int,
        submission_key: str,
        xqueue_body: str,
        xqueue_files: str = "{}",
        reply_to: ReplyRoute | None = None,
        **_ignored: Any,
    ) -> bool:
        content = {
            "xqueue_header": json.dumps({"submission_id": submission_id, "submission_key": submission_key}),
            "xqueue_body": xqueue_body,
            "xqueue_files": xqueue_files,
        }
        result = function(content)
        if not result:
            logger.warning("submission %s: the grading function returned nothing; no reply sent", submission_id)
            return False
        reply = result if isinstance(result, str) else json.dumps(result)
        grader = self.request.hostname or socket.gethostname()
        send_reply(reply_to, reply_args(submission_id, submission_key, reply, grader))
        return True

    return app


def worker_argv(queue: str, concurrency: int, pool: str, loglevel: str, hostname: str | None) -> list[str]:
    return [
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--hostname",
        hostname or f"grader-{queue}@%h",
        # No gossip, mingle or heartbeat events: they need exchanges beyond the grader's own queue.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gradequeue_grader",
        description="Consume a gradequeue celery-mode queue and grade each submission with one Python function.",
    )
    parser.add_argument("--queue", required=True, help="the gradequeue queue's name (also its broker queue)")
    parser.add_argument("--function", required=True, help="the grading function, as package.module:function")
    parser.add_argument(
        "--broker",
        default=os.environ.get("GRADER_BROKER_URL", "amqp://guest:guest@localhost//"),
        help="broker URL (default: $GRADER_BROKER_URL, else a local RabbitMQ)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="submissions graded at once (default 4)")
    parser.add_argument(
        "--pool",
        choices=["prefork", "threads", "solo"],
        default="prefork",
        help="prefork (default: processes, isolates crashes), threads, or solo",
    )
    parser.add_argument(
        "--broker-folder",
        default=None,
        help="filesystem:// broker only: the message folder (default $GRADEQUEUE_BROKER_DIR or var/broker)",
    )
    parser.add_argument("--hostname", default=None, help="worker name, shown in gradequeue's event timeline")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    function = load_function(args.function)
    app = make_app(args.queue, function, args.broker, broker_folder=args.broker_folder)
    app.worker_main(worker_argv(args.queue, args.concurrency, args.pool, args.loglevel, args.hostname))
