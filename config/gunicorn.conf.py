"""gunicorn configuration for gradequeue (``gunicorn -c config/gunicorn.conf.py config.wsgi``).

Why these values, measured with ``make bench`` on a 2-core machine (BENCHMARKS.md):

- Threaded workers (``gthread``) with keep-alive. Graders and the LMS reuse their connections
  (xqueue-watcher polls through one ``requests.Session``); a sync worker closes every connection after one
  request, so each poll paid for a TCP handshake and a lingering close, and a worker sat idle until the
  client had read its reply. With gthread, 16 graders draining a backlog graded 20-25 % more per second
  than with 4 sync workers, in runs side by side; the same holds for the other Django servers measured.
- Workers = cores + 1, 4 threads each: a thread waits on PostgreSQL or the broker for part of each request,
  and another thread (or process) fills that time; with more processes than that, two cores only switch
  between them more often. 2 x 8 and 4 x 4 were no better than 3 x 4.
- ``preload_app``: Django is imported once in the master, so workers fork ready and share memory;
  ``config/wsgi.py`` also imports there what the first requests would (URL configuration, views, DRF).
- No access log: a line per request costs measurable time at hundreds of requests per second; the
  application logs every state change already.
- A finite ``max_requests`` with jitter recycles workers to contain slow memory growth, far apart enough
  (tens of thousands of requests) that its cost does not show.

Every value can be overridden from the environment (``GUNICORN_WORKERS``, ``GUNICORN_THREADS``,
``GUNICORN_WORKER_CLASS``, ``GUNICORN_BIND``...). Each thread holds a database connection of its own
(persistent): workers x threads connections per web container.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", 4))
preload_app = True
backlog = 2048
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = 10
# Longer than a watcher's 1 s sleep after an empty poll, so that an idle grader keeps its connection.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", 5))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 50000))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "warning")
