from django.urls import include, path

urlpatterns = [path("xqueue/", include("submissions.urls"))]
