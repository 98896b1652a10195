"""Celery tasks for operations: periodic measurements that the status page reads."""

from __future__ import annotations

from celery_app import app
from grading import metrics, publish, stats
from tasks.grading import COMMON


@app.task(name=publish.SAMPLE_DEPTH_TASK, soft_time_limit=30, time_limit=45, **COMMON)
def sample_queue_depth() -> int:
    return stats.take_samples()


@app.task(name=publish.ROLLUP_METRICS_TASK, soft_time_limit=120, time_limit=150, **COMMON)
def rollup_metrics() -> int | None:
    return metrics.rollup()
