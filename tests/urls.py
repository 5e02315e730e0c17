from django.contrib import admin
from django.urls import include, path

from tests.testapp import services

urlpatterns = [
    path("admin/", admin.site.urls),
    path("services/", include("servicewire.urls")),
    # The original pattern: a decorated function routed directly as a view.
    path("direct/add", services.add),
]
