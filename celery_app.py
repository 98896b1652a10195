"""The Celery application. Task modules live in ``tasks/``; settings come from Django's CELERY_* names."""

import os

from celery import Celery

from config import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
broker.install()

app = Celery("gradequeue")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.include = ["tasks.grading", "tasks.ops"]
