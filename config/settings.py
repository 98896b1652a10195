"""gradequeue settings: one module, read from environment variables.

The defaults make ``make run`` work on a laptop with nothing installed: SQLite and kombu's filesystem
transport. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to PostgreSQL and RabbitMQ/Redis.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GRADEQUEUE_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
# The test suite runs with development defaults, on a broker queue and folder of its own so that it never
# shares work with a development server on the same machine.
TESTING = "pytest" in sys.modules
# Development runs (make run, tests) get a fixed throwaway key; a production deployment must set one.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if env_bool("GRADEQUEUE_DEV", False) or DEBUG or TESTING:
        SECRET_KEY = "gradequeue-development-only-secret-key-do-not-deploy"
    else:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it, or set GRADEQUEUE_DEV=1 for a development run."
        )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "grading",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and JS, served by the app itself (the web server serves no files); see WHITENOISE_* below.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's, answering the XQueue API's envelope when the session cannot be saved (grading/middleware.py).
    "grading.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Django's, except on the XQueue API, which shows no messages (grading/middleware.py).
    "grading.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Both "/xqueue/submit/" and "/xqueue/submit" are routed explicitly; a 301 would make clients drop POST bodies.
APPEND_SLASH = False
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'gradequeue.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 600))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file: WAL lets readers run beside the writer, IMMEDIATE
    # transactions take the write lock up front instead of failing on a lock upgrade, and the timeout
    # makes writers wait their turn. Connections are kept (DB_CONN_MAX_AGE) as on PostgreSQL: opening one
    # (its PRAGMAs, Django's SQL functions) cost 1.2 ms of CPU, six times the query it served.
    # Writers queue on a lock file before SQLite's own lock, instead of polling it (grading/sqlite_backend).
    DATABASES["default"]["ENGINE"] = "grading.sqlite_backend"
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-gradequeue.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # MySQL 8 / MariaDB >= 10.6 (mysqlclient). utf8mb4 on the connection, so that 4-byte characters (emoji)
    # arrive whole; strict mode, so that a value a column cannot hold is an error instead of being cut or
    # mangled; READ COMMITTED (Django's default for MySQL, said here because the lease relies on it: no gap
    # locks, so one grader's SKIP LOCKED claim never waits on another's). Migration 0010 gives gradequeue's
    # tables utf8mb4 with a binary collation, whatever the database's default, and the indexes that stand in
    # for PostgreSQL's partial ones (hence the silenced warnings that MySQL ignores index conditions and
    # included columns; 0013 gives sub_leased its status column back).
    DATABASES["default"]["OPTIONS"] = {
        "charset": "utf8mb4",
        "isolation_level": "read committed",
        "init_command": "SET sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
    }
    DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"}
    SILENCED_SYSTEM_CHECKS = ["models.W037", "models.W040"]
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # Before the first query of every request that reuses a connection, a connection broken by a database
    # restart is replaced before it fails a request (one per thread otherwise). On MySQL/MariaDB that check is a
    # ping, a round trip; on PostgreSQL it is a look at the socket, and a round trip only when the server has
    # sent something or hung up (grading/postgresql_backend).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("DB_CONN_HEALTH_CHECKS", True)
# PostgreSQL: parameters bound by the server, and statements run five times on a connection prepared there: the
# hot statements (lease, result, scoring) are then planned once per connection instead of once per request,
# about a quarter of PostgreSQL's CPU per grade (measured with bench/). After a migration that changes a table,
# running processes should be restarted (as any deployment does) so that no stale plan is used.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_SERVER_SIDE_BINDING", True):
    DATABASES["default"].setdefault("OPTIONS", {}).update({"server_side_binding": True, "prepare_threshold": 5})
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "grading.postgresql_backend"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    # The cache makes things faster and never takes the service down (grading/rediscache.py): while Redis is
    # unreachable, calls skip it for CACHE_RETRY_SECONDS, then one tries again; these timeouts bound a call
    # to a Redis that accepts connections and never answers.
    CACHES = {
        "default": {
            "BACKEND": "grading.rediscache.ResilientRedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {
                "RETRY_SECONDS": env_float("CACHE_RETRY_SECONDS", 2.0, minimum=0.0),
                "SOCKET_CONNECT_TIMEOUT": env_float("CACHE_CONNECT_TIMEOUT", 0.25, minimum=0.01),
                "SOCKET_TIMEOUT": env_float("CACHE_TIMEOUT", 0.5, minimum=0.01),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# With a shared cache (Redis), sessions are read from it (and for a moment from the process itself,
# grading.sessions) and written to both: a grader's poll then costs no session query. Without one, the
# database alone (a per-process cache would not see other processes' logins).
SESSION_ENGINE = "grading.sessions" if CACHE_URL.startswith(("redis://", "rediss://")) else "grading.dbsessions"
# API clients log in again whenever they are redirected to the login page, so sessions can be short.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 24 * 3600, minimum=60)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Passwords people choose keep Django's default hasher; repeated logins with the same credentials skip the
# slow hash for GRADEQUEUE["LOGIN_CACHE_SECONDS"] (see grading/auth_backends.py). Machine secrets
# (create_account --generate-secret) are checked by a keyed hash in microseconds (grading/credentials.py);
# their hasher comes last, so that it is never chosen for a password.
AUTHENTICATION_BACKENDS = ["grading.auth_backends.CachedCredentialsBackend"]
PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, "grading.credentials.MachineSecretHasher"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Without collectstatic (make run, the tests) WhiteNoise finds the files in the installed apps; the Docker
# image runs collectstatic at build time and serves them from STATIC_ROOT.
WHITENOISE_USE_FINDERS = not (STATIC_ROOT / "admin").is_dir()
if WHITENOISE_USE_FINDERS:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request if it is missing
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Requests larger than this are refused with the protocol's failure envelope (never a 400/500).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("GRADEQUEUE_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["grading.api.auth.SessionAuthenticationNoCsrf"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["grading.api.envelope.XQueueRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "grading.api.envelope.EnvelopeOnly",
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # The JSON API's schema (grading.rest); its views set their own authentication, parsers and renderers.
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI 3 schema of the JSON API, served at /api/v1/schema/ with Swagger UI at /api/v1/docs/ (its
# files come from drf-spectacular-sidecar and are served by the app: no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "gradequeue API",
    "DESCRIPTION": "Queues, submissions, results and operator actions. Errors are RFC 9457 problem details.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "PREPROCESSING_HOOKS": ["grading.rest.schema.only_the_json_api"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "grading.rest.schema.problem_responses",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Celery -------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: messages are files in one folder that every process on this machine
    # shares, so web, worker and beat talk without any server. Development only: it has no acks that
    # survive a killed worker (the database sweep recovers those tasks).
    _broker_dir = Path(env_str("GRADEQUEUE_BROKER_DIR", str(VAR_DIR / ("test-broker" if TESTING else "broker"))))
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The transport polls the folder; the default 1 s would add up to a second to every hop.
        "polling_interval": 0.05,
    }
    # kombu's transport with messages written whole (a consumer never reads a half-written file).
    CELERY_BROKER_TRANSPORT = "gradequeue_grader.filesystem:Transport"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_TASK_DEFAULT_QUEUE = env_str("GRADEQUEUE_CELERY_QUEUE", "gradequeue-test" if TESTING else "gradequeue")
# Task events are what Flower shows; each task then costs up to four more broker messages (sent, received,
# started, succeeded). Off unless CELERY_TASK_EVENTS=true: workers started with -E (make run, compose) send
# theirs, and Flower switches them on in running workers by itself (its enable_events option, on by default).
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_TASK_EVENTS", False)
# Workers and beat log through Django's LOGGING (below), so that LOG_FORMAT=json applies to them too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish while the broker is unreachable must fail fast: the row is already committed and the sweep
# re-enqueues it, so blocking the HTTP request for the default retry period helps nobody.
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- gradequeue ---------------------------------------------------------------------------------------
# Everything tunable about the queue, in one place, each default written only here. grading.conf.setting
# reads it; per-queue columns (Queue.lease_seconds, Queue.max_attempts) override the first two.
GRADEQUEUE = {
    # How long a pulled submission stays leased to its grader before it comes back.
    "LEASE_SECONDS": env_int("GRADEQUEUE_LEASE_SECONDS", 300, minimum=1),
    # How many leases a submission gets before it fails and the LMS is told it could not be graded.
    "MAX_ATTEMPTS": env_int("GRADEQUEUE_MAX_ATTEMPTS", 3, minimum=1),
    # LMS delivery back-off: the n-th retry waits a random time in [c/2, c], c = min(CAP, BASE * 2**(n-1))
    # ("equal jitter"), and delivery goes on until HORIZON seconds after the first attempt.
    "DELIVERY_BACKOFF_BASE": env_float("GRADEQUEUE_DELIVERY_BACKOFF_BASE", 2.0, minimum=0.001),
    "DELIVERY_BACKOFF_CAP": env_float("GRADEQUEUE_DELIVERY_BACKOFF_CAP", 600.0, minimum=0.001),
    "DELIVERY_HORIZON": env_float("GRADEQUEUE_DELIVERY_HORIZON", 6 * 3600.0, minimum=0.0),
    "DELIVERY_TIMEOUT": env_float("GRADEQUEUE_DELIVERY_TIMEOUT", 10.0, minimum=0.1),
    # How long get_submission may wait on an empty queue for a submission to arrive (0: answer "empty" at once).
    # A grader then gets new work as soon as it is submitted instead of after its next sleep (xqueue-watcher
    # sleeps 1 s after an empty poll): submit-to-grade latency drops from about half a second to tens of ms
    # (BENCHMARKS.md). Well under the watcher's 1 s request timeout. Off in the tests, which set it themselves.
    "EMPTY_POLL_WAIT": env_float("GRADEQUEUE_EMPTY_POLL_WAIT", 0.0 if TESTING else 0.5, minimum=0.0, maximum=0.8),
    # A waiting get_submission holds a web thread: at most this many wait at once in one web process (the
    # others answer "empty" at once), so that its remaining threads serve everyone else.
    "EMPTY_POLL_WAITERS": env_int("GRADEQUEUE_EMPTY_POLL_WAITERS", 2, minimum=0),
    # ...and none waits while all of the process's web threads have a request (config/serve.py reads the same
    # variable): others may be queued behind them.
    "WEB_THREADS": env_int("WEB_THREADS", 8, minimum=1),
    # Replies one scoring run scores with one statement (and then posts to the LMS, eight at a time). A run
    # also keeps a batch's POSTs within about 60 s of DELIVERY_TIMEOUTs: 48 with the default 10 s timeout.
    "SCORE_BATCH": env_int("GRADEQUEUE_SCORE_BATCH", 100, minimum=1),
    # The sweep re-enqueues work whose task message never ran (broker down at commit, worker killed).
    "SWEEP_BATCH": env_int("GRADEQUEUE_SWEEP_BATCH", 500, minimum=1),
    "SWEEP_GRACE_SECONDS": env_float("GRADEQUEUE_SWEEP_GRACE_SECONDS", 30.0, minimum=0.0),
    # Submit limits.
    "MAX_FILES": env_int("GRADEQUEUE_MAX_FILES", 20, minimum=0),
    "MAX_FILE_BYTES": env_int("GRADEQUEUE_MAX_FILE_BYTES", 10 * 1024 * 1024, minimum=1),
    # Download links in xqueue_files expire after this many seconds (longer than a lease).
    "FILE_URL_SECONDS": env_int("GRADEQUEUE_FILE_URL_SECONDS", 24 * 3600, minimum=60),
    # The base URL graders use to reach this service (for file links), when a proxy hides it from requests.
    "PUBLIC_BASE_URL": env_str("GRADEQUEUE_PUBLIC_BASE_URL", ""),
    # How long a successful password check is remembered (keyed digest only), so that graders' frequent
    # re-logins answer within their 1 s timeout. 0 turns it off.
    "LOGIN_CACHE_SECONDS": env_int("GRADEQUEUE_LOGIN_CACHE_SECONDS", 600, minimum=0),
    # The server key of machine secrets' keyed hash (grading/credentials.py); empty: derived from
    # DJANGO_SECRET_KEY. Changing it (or the secret key, while this is empty) invalidates every generated secret.
    "CREDENTIAL_KEY": env_str("GRADEQUEUE_CREDENTIAL_KEY", ""),
    # The key(s) HTTP push passwords are encrypted with in the database (grading/secretbox.py): any text,
    # comma-separated to rotate (the first encrypts, all decrypt); empty: derived from DJANGO_SECRET_KEY.
    "ENCRYPTION_KEY": env_str("GRADEQUEUE_ENCRYPTION_KEY", ""),
    # Push modes (grading.push). HTTP push: each POST's timeout, and how many POSTs one lease gets (with
    # back-off between them) before the submission fails and the LMS is told it could not be graded.
    "PUSH_HTTP_TIMEOUT": env_float("GRADEQUEUE_PUSH_HTTP_TIMEOUT", 30.0, minimum=0.1),
    "PUSH_HTTP_ATTEMPTS": env_int("GRADEQUEUE_PUSH_HTTP_ATTEMPTS", 5, minimum=1),
    "PUSH_HTTP_BACKOFF_BASE": env_float("GRADEQUEUE_PUSH_HTTP_BACKOFF_BASE", 2.0, minimum=0.0),
    "PUSH_HTTP_BACKOFF_CAP": env_float("GRADEQUEUE_PUSH_HTTP_BACKOFF_CAP", 60.0, minimum=0.0),
    # Leases one dispatch run hands out before it hands the rest of the queue to a fresh task.
    "PUSH_DISPATCH_BATCH": env_int("GRADEQUEUE_PUSH_DISPATCH_BATCH", 200, minimum=1),
    # How long an account and its queue grants may be served from the cache. Changes through the ORM (admin,
    # commands) are forgotten at once; this bounds what a raw SQL change can leave unseen.
    "ACCESS_CACHE_SECONDS": env_float("GRADEQUEUE_ACCESS_CACHE_SECONDS", 60.0, minimum=0.0),
    # ...and how long each web process may keep a session, an account or its grants to itself
    # (grading.localcache): what another process changed (a logout, a revoked grant) shows within this time.
    "LOCAL_CACHE_SECONDS": env_float("GRADEQUEUE_LOCAL_CACHE_SECONDS", 5.0, minimum=0.0),
    # Queues created at start-up: "name" or "name:mode", comma-separated.
    "SEED_QUEUES": env_list("GRADEQUEUE_QUEUES", []),
    # Who may read /metrics: a request with "Authorization: Bearer <METRICS_TOKEN>" (when a token is set),
    # or one from an address in METRICS_ALLOWED_NETWORKS (below: loopback in development, none in production).
    "METRICS_TOKEN": env_str("GRADEQUEUE_METRICS_TOKEN", ""),
    # The readiness check gives the database and the broker this many seconds each, and its answer is kept
    # this long (a curl loop or a load balancer must not open a broker connection per request).
    "READY_TIMEOUT": env_float("GRADEQUEUE_READY_TIMEOUT", 2.0, minimum=0.1),
    "READY_CACHE_SECONDS": env_float("GRADEQUEUE_READY_CACHE_SECONDS", 1.5, minimum=0.0),
    # After a task message could not be published, publishes are skipped for this long (the sweep sends the
    # work later): an unreachable broker costs one request its connection timeout per period, not every one.
    "BROKER_RETRY_SECONDS": env_float("GRADEQUEUE_BROKER_RETRY_SECONDS", 5.0, minimum=0.0),
    # Queue depth samples (the status page's chart) are kept this long.
    "SAMPLE_RETENTION_SECONDS": env_int("GRADEQUEUE_SAMPLE_RETENTION_SECONDS", 24 * 3600, minimum=3600),
}

# --- Files, limits and security ----------------------------------------------------------------------
# Development runs (make run, the tests) get safe local defaults; production must say what it wants.
_DEVELOPMENT = env_bool("GRADEQUEUE_DEV", False) or DEBUG or TESTING

# Submission files go to the local MEDIA_ROOT unless GRADEQUEUE_S3_BUCKET selects S3-compatible storage.
# Objects stay private; graders get presigned URLs that expire after FILE_URL_SECONDS.
_S3_BUCKET = env_str("GRADEQUEUE_S3_BUCKET", "")
if _S3_BUCKET:
    _s3_options = {
        "bucket_name": _S3_BUCKET,
        "endpoint_url": env_str("GRADEQUEUE_S3_ENDPOINT_URL", ""),
        "region_name": env_str("GRADEQUEUE_S3_REGION", ""),
        # Empty: boto3's own chain (AWS_ACCESS_KEY_ID, an instance or task role, ...).
        "access_key": env_str("GRADEQUEUE_S3_ACCESS_KEY_ID", ""),
        "secret_key": env_str("GRADEQUEUE_S3_SECRET_ACCESS_KEY", ""),
        "location": env_str("GRADEQUEUE_S3_PREFIX", ""),
        "addressing_style": env_str("GRADEQUEUE_S3_ADDRESSING_STYLE", ""),
    }
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            **{name: value for name, value in _s3_options.items() if value},
            "querystring_auth": True,
            "querystring_expire": GRADEQUEUE["FILE_URL_SECONDS"],
            "signature_version": "s3v4",
            "file_overwrite": False,
            "default_acl": None,
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Grades are POSTed only to these callback hosts (names or glob patterns, comma-separated). Development
# allows loopback only; a production deployment must list its LMS hosts or refuses to start.
_CALLBACK_HOSTS = env_list("GRADEQUEUE_CALLBACK_HOSTS", ["localhost", "127.0.0.1", "::1"] if _DEVELOPMENT else [])
if not _CALLBACK_HOSTS and not _DEVELOPMENT:
    raise ImproperlyConfigured(
        "GRADEQUEUE_CALLBACK_HOSTS is not set: list the LMS hosts that grades may be posted to, "
        "for example GRADEQUEUE_CALLBACK_HOSTS=lms.example.org,*.courses.example.org"
    )
if os.environ.get("GRADEQUEUE_LOGIN_FAILURES_PER_ACCOUNT"):
    raise ImproperlyConfigured(
        "GRADEQUEUE_LOGIN_FAILURES_PER_ACCOUNT is gone: failed logins are counted per account and client address "
        "(GRADEQUEUE_LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS), so that a guesser cannot lock the real client out"
    )
GRADEQUEUE.update(
    {
        "CALLBACK_HOSTS": _CALLBACK_HOSTS,
        # Failed logins (grading/throttle.py): after this many failures in LOGIN_THROTTLE_SECONDS (counted
        # from the first), an account must wait, from that client address only; and a client address, for
        # every account. A guesser elsewhere never locks the real client out.
        "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": env_int(
            "GRADEQUEUE_LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS", 10, minimum=1
        ),
        "LOGIN_FAILURES_PER_ADDRESS": env_int("GRADEQUEUE_LOGIN_FAILURES_PER_ADDRESS", 50, minimum=1),
        "LOGIN_THROTTLE_SECONDS": env_int("GRADEQUEUE_LOGIN_THROTTLE_SECONDS", 900, minimum=1),
        # Behind a reverse proxy: the header whose last entry is the client address (e.g. X-Forwarded-For).
        "LOGIN_CLIENT_ADDRESS_HEADER": env_str("GRADEQUEUE_LOGIN_CLIENT_ADDRESS_HEADER", ""),
        # Addresses that may read /metrics without the token (CIDRs, comma-separated). Production allows none by
        # default: behind a reverse proxy on the same host every visitor comes from loopback. Allowing
        # addresses without a token is warned about at start (grading.apps).
        "METRICS_ALLOWED_NETWORKS": env_list(
            "GRADEQUEUE_METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"] if _DEVELOPMENT else []
        ),
        "DEVELOPMENT": _DEVELOPMENT,
    }
)

# LOG_FORMAT=json writes one JSON object per line (for log shippers); the default is plain text.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not one of: plain, json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # python-json-logger: the record's standard fields under short names, and every field passed through
        # ``extra=`` (submission_id, queue, from, to, reason, attempt, outcome, ...) as a top-level key.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "{levelname}{name}{message}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger", "exc_info": "exception", "stack_info": "stack"},
            "timestamp": "time",
            "json_ensure_ascii": False,
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
