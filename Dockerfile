# gradequeue: one image for every service of docker-compose.yml (web, worker, beat, flower, migrate).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    GRADEQUEUE_VAR_DIR=/app/var

WORKDIR /app
RUN groupadd --system --gid 10001 gradequeue \
    && useradd --system --uid 10001 --gid gradequeue --home-dir /app --shell /usr/sbin/nologin gradequeue

# Dependencies first, in a layer of their own read from pyproject.toml alone, so that a code change does not
# reinstall them; then the project itself without dependencies. They include the "mysql" extra, so that one
# image serves DATABASE_URL=mysql://... too: mysqlclient is built against MariaDB's client library, whose
# compiler and headers leave again in the same layer while the library stays.
COPY pyproject.toml ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 build-essential pkg-config libmariadb-dev \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['mysql']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && apt-get purge -y --auto-remove build-essential pkg-config libmariadb-dev \
    && rm -rf /var/lib/apt/lists/* /tmp/requirements.txt
COPY README.md celery_app.py manage.py ./
COPY config ./config
COPY grading ./grading
COPY tasks ./tasks
# The grader SDK's package: the server imports its message definitions (gradequeue_grader.protocol).
COPY grader/gradequeue_grader ./grader/gradequeue_grader
RUN pip install --no-deps . \
    && DJANGO_SECRET_KEY=build-only GRADEQUEUE_DEV=1 python manage.py collectstatic --noinput \
    && mkdir -p /app/var/media \
    && chown -R gradequeue:gradequeue /app/var

USER gradequeue
EXPOSE 8000
# The web service; docker-compose.yml gives the worker, beat, flower and migrate services their own command.
# config/serve.py: Granian serving the WSGI application (the configuration BENCHMARKS.md measured).
ENV WEB_BIND=0.0.0.0:8000
CMD ["python", "-m", "config.serve"]
