"""A minimal Django project serving edx-submissions' XQueue views (its ``XQueueViewSet``) for the benchmark.

Its best configuration: PostgreSQL with persistent connections (CONN_MAX_AGE), no debug, no extra
middleware beyond what sessions, CSRF and authentication need.
"""

import os

SECRET_KEY = "edx-submissions-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "submissions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
APPEND_SLASH = False
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("EDX_DB_NAME", "gq_bench_edx"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "CONN_MAX_AGE": int(os.environ.get("EDX_CONN_MAX_AGE", "600")),
        "CONN_HEALTH_CHECKS": True,
        # Seeding only (never while serving): skip the per-commit flush so a 100 000 backlog takes seconds.
        "OPTIONS": {"options": "-c synchronous_commit=off"} if os.environ.get("EDX_SEEDING") else {},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
TIME_ZONE = "UTC"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
