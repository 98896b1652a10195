"""gradequeue's grader SDK: run a Celery-queue grader with one grading function and broker access only.

``python -m gradequeue_grader --help`` (or the ``gradequeue-grader`` command) runs it;
:mod:`gradequeue_grader.worker` has the worker, :mod:`gradequeue_grader.protocol` the messages it exchanges
with gradequeue.
"""

from gradequeue_grader.protocol import GRADE_TASK, RECORD_TASK
from gradequeue_grader.worker import load_function, main, make_app

__all__ = ["GRADE_TASK", "RECORD_TASK", "load_function", "main", "make_app"]
