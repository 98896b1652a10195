"""Celery tasks for operations: periodic measurements that the status page reads."""

from __future__ import annotations

from celery_app import app
from grading import stats
from tasks.grading import COMMON


@app.task(name="grading.sample_queue_depth", soft_time_limit=30, time_limit=45, **COMMON)
def sample_queue_depth() -> int:
    return stats.take_samples()
