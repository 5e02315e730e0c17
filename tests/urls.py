from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from tests.testapp import services

urlpatterns = [
    path("admin/", admin.site.urls),
    path("services/", include("servicewire.urls")),
    # The original pattern: a decorated function routed directly as a view.
    path("direct/add", services.add),
    # A page of the site that calls services from the browser (tests/test_sessions.py).
    path("page/call/", TemplateView.as_view(template_name="testapp/call.html")),
]
