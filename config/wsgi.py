import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

from grading.middleware import edge  # noqa: E402 (needs the settings above)

# Before Django builds its request: a non-text charset is refused, a chunked body is read (grading/middleware.py).
application = edge(django_application)


def warm_up() -> None:
    """Import what the first requests would otherwise import, as the web worker loads the application.

    Django loads the URL configuration (and with it every view, DRF and the task modules the views reach)
    on the first request, and Celery its result backend on the first task message; in each web worker that
    cost about a second of CPU while serving load. Here each worker pays it before it serves. Nothing here
    opens a connection, so the module may also be imported before a fork.
    """
    import redis  # noqa: F401 (the cache's client library, imported on the first cache call)
    from django.urls import get_resolver
    from rest_framework.settings import api_settings

    from celery_app import app as celery_app

    get_resolver().url_patterns  # noqa: B018 (imports config.urls and every view)
    for name in (
        "DEFAULT_AUTHENTICATION_CLASSES",
        "DEFAULT_PERMISSION_CLASSES",
        "DEFAULT_RENDERER_CLASSES",
        "DEFAULT_PARSER_CLASSES",
        "DEFAULT_CONTENT_NEGOTIATION_CLASS",
        "DEFAULT_THROTTLE_CLASSES",
    ):
        getattr(api_settings, name)
    celery_app.backend  # noqa: B018 (the disabled result backend: no connection)
    celery_app.amqp  # noqa: B018


warm_up()
