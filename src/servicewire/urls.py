"""Mount servicewire: ``path("services/", include("servicewire.urls"))``."""

from django.urls import path, re_path

from servicewire import views

app_name = "servicewire"

urlpatterns = [
    path("", views.discovery, name="discovery"),
    path("openapi.json", views.openapi, name="openapi"),
    path("_auth/token", views.token, name="token"),
    # Any other last segment is a service name; the view validates it, so a
    # malformed name gets the same NotFound envelope as an unknown one.
    re_path(r"^(?P<name>[^/]+)$", views.call, name="call"),
]
