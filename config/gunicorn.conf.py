"""gunicorn configuration for gradequeue (``gunicorn -c config/gunicorn.conf.py config.wsgi``).

Why these values, measured with ``make bench`` on a 2-core machine:

- Sync workers. Every XQueue request is short and CPU-bound in Python (parse, one or two statements, JSON):
  there is no slow I/O to overlap inside a request, so threads or an event loop would only add switching and
  contention for the GIL. Slow clients are not a concern behind a reverse proxy, which buffers them.
- Workers = 2 x cores (+0): a worker waits on PostgreSQL for part of each request, and a second worker per
  core fills that time. More workers raise tail latency (more processes competing for two cores) without
  adding throughput, and each holds a database connection.
- ``preload_app``: Django is imported once in the master, so workers fork ready and share memory.
- No access log: a line per request costs measurable time at hundreds of requests per second; the
  application logs every state change already.
- A finite ``max_requests`` with jitter recycles workers to contain slow memory growth, far apart enough
  (tens of thousands of requests) that its cost does not show.

Every value can be overridden from the environment (``GUNICORN_WORKERS``, ``GUNICORN_BIND``...).
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", 2 * multiprocessing.cpu_count()))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", 1))
preload_app = True
backlog = 2048
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = 10
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 50000))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "warning")
