import logging

from django.apps import AppConfig


class GradingConfig(AppConfig):
    name = "grading"

    def ready(self) -> None:
        # Cached grants and accounts must be forgotten wherever they change: web, worker, commands, admin.
        from grading import access, auth_backends

        access.connect_signals()
        auth_backends.connect_signals()

        from grading.ops_views import metrics_exposure_warning

        warning = metrics_exposure_warning()
        if warning:
            logging.getLogger("grading.metrics").warning(warning)
