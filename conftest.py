"""Test-wide environment, set before Django's settings are read."""

import os

os.environ.setdefault("GRADEQUEUE_DEV", "1")
# Tests never share a broker queue or folder with a development server running on the same machine.
os.environ.setdefault("GRADEQUEUE_CELERY_QUEUE", "gradequeue-test")
os.environ.setdefault("GRADEQUEUE_BROKER_DIR", os.path.join(os.path.dirname(__file__), "var", "test-broker"))
