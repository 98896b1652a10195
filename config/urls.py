from django.contrib import admin
from django.urls import include, path, re_path

from grading import ops_views
from grading.api import views

# Every XQueue path is served with and without its trailing slash: a 301 would make clients drop the body.
xqueue = [
    ("login", views.LoginView, "xqueue-login"),
    ("logout", views.LogoutView, "xqueue-logout"),
    ("status", views.StatusView, "xqueue-status"),
    ("submit", views.SubmitView, "xqueue-submit"),
    ("get_queuelen", views.GetQueueLenView, "xqueue-get-queuelen"),
    ("get_submission", views.GetSubmissionView, "xqueue-get-submission"),
    ("put_result", views.PutResultView, "xqueue-put-result"),
]

urlpatterns = [
    *(re_path(rf"^xqueue/{name}/?$", view.as_view(), name=url_name) for name, view, url_name in xqueue),
    path("xqueue/files/<str:token>/<str:name>", views.download, name="xqueue-file"),
    path("admin/", admin.site.urls),
    # The JSON API with its OpenAPI schema (grading/rest).
    path("api/v1/", include("grading.rest.urls")),
    # Operations: readiness (database + broker), Prometheus metrics, the staff status page.
    path("xqueue/ready/", ops_views.ready_view, name="ready"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("ops/status/", ops_views.status_page, name="ops-status"),
]
