"""``/api/v1/``: the JSON API, its OpenAPI 3 schema and its browsable documentation."""

from __future__ import annotations

from django.urls import path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny

from grading.rest import views


class SchemaView(SpectacularAPIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    content_negotiation_class = DefaultContentNegotiation


class SwaggerView(SpectacularSwaggerView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    content_negotiation_class = DefaultContentNegotiation


class RedocView(SpectacularRedocView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    content_negotiation_class = DefaultContentNegotiation


class SubmissionId:
    """A submission id as a path segment: at most 18 digits, so it always fits the database's integer."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(SubmissionId, "sid")

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="api-schema"),
    path("docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", RedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("queues/", views.QueueList.as_view(), name="api-queues"),
    path("queues/<str:name>/", views.QueueDetail.as_view(), name="api-queue"),
    path("submissions/", views.SubmissionList.as_view(), name="api-submissions"),
    path("submissions/<sid:pk>/", views.SubmissionDetail.as_view(), name="api-submission"),
    path("submissions/<sid:pk>/<str:action>/", views.SubmissionAction.as_view(), name="api-submission-action"),
    path("bulk/<str:action>/", views.BulkAction.as_view(), name="api-bulk-action"),
    # Anything else under /api/v1/ is a problem-details 404 too, not Django's HTML page.
    re_path(r"^", views.not_found),
]
