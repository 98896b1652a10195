"""Celery tasks for operations: periodic measurements that the status page reads."""

from __future__ import annotations

from celery_app import app
from grading import metrics, stats
from tasks.grading import COMMON


@app.task(name="grading.sample_queue_depth", soft_time_limit=30, time_limit=45, **COMMON)
def sample_queue_depth() -> int:
    return stats.take_samples()


@app.task(name="grading.rollup_metrics", soft_time_limit=120, time_limit=150, **COMMON)
def rollup_metrics() -> int | None:
    return metrics.rollup()
