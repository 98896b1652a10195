"""The Celery application. Task modules live in ``tasks/``; settings come from Django's CELERY_* names."""

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("gradequeue")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.include = ["tasks.grading", "tasks.ops"]

# Celery's Django fix-up closes every database connection before and after each task unless this is set:
# a new PostgreSQL connection (and server process) per task, which was a fifth of a worker's time and most
# of PostgreSQL's CPU under load. Connections are kept instead, and closed by Django's own rule below
# (CONN_MAX_AGE, or a connection an error left unusable), as the web does between requests.
app.conf.CELERY_DB_REUSE_MAX = 10**9


@signals.setup_logging.connect
def _keep_django_logging(**_: Any) -> None:
    """Logging is Django's LOGGING (config/settings.py: LOG_LEVEL, LOG_FORMAT) in the worker and beat too.

    Without a receiver of this signal Celery configures logging itself and sets the root logger to its
    ``--loglevel``, WARNING unless given: ``celery -A celery_app worker`` then dropped the INFO lines of
    grading.lifecycle and grading.delivery. With one, Celery leaves logging alone (``--loglevel`` changes
    nothing); Django configures it at setup, done here if this process has not done it yet.
    """
    from django.apps import apps

    if not apps.ready:
        import django

        django.setup()


@signals.task_postrun.connect
def _close_old_connections(**_: Any) -> None:
    from django.db import close_old_connections

    close_old_connections()
