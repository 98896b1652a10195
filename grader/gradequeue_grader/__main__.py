"""``python -m gradequeue_grader``: run a grader worker (see :mod:`gradequeue_grader.worker`)."""

from gradequeue_grader.worker import main

if __name__ == "__main__":
    main()
