from django.apps import AppConfig


class GradingConfig(AppConfig):
    name = "grading"

    def ready(self) -> None:
        # Cached grants and accounts must be forgotten wherever they change: web, worker, commands, admin.
        from grading import access
        from grading.api import auth

        access.connect_signals()
        auth.connect_signals()
