"""The constant-view limit: Django answering the grader's two requests with fixed replies, no database.

Served by the same server configuration as the contestants (config/serve.py), it measures what the server,
WSGI and Django's request cycle cost by themselves, two requests per grade.
"""

import json
import os

from django.http import HttpResponse
from django.urls import re_path

SECRET_KEY = "constant-view-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
APPEND_SLASH = False
USE_TZ = True

SUBMISSION = json.dumps(
    {
        "return_code": 0,
        "content": json.dumps(
            {
                "xqueue_header": json.dumps({"submission_id": 1, "submission_key": "k" * 43}),
                "xqueue_body": json.dumps({"grader_payload": "{}", "student_info": "{}", "student_response": "0"}),
                "xqueue_files": "{}",
            }
        ),
    }
).encode()
OK = json.dumps({"return_code": 0, "content": ""}).encode()
LOGGED_IN = json.dumps({"return_code": 0, "content": "Logged in"}).encode()


def get_submission(request):  # type: ignore[no-untyped-def]
    return HttpResponse(SUBMISSION, content_type="application/json")


def put_result(request):  # type: ignore[no-untyped-def]
    request.POST  # noqa: B018  (parse the form, as a real view must)
    return HttpResponse(OK, content_type="application/json")


def login(request):  # type: ignore[no-untyped-def]
    return HttpResponse(LOGGED_IN, content_type="application/json")


urlpatterns = [
    re_path(r"^xqueue/get_submission/$", get_submission),
    re_path(r"^xqueue/put_result/$", put_result),
    re_path(r"^xqueue/login/$", login),
]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app")
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
