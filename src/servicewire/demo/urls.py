"""The demo site's URLs: servicewire mounted at ``services/``, nothing else."""

from django.urls import include, path

urlpatterns = [path("services/", include("servicewire.urls"))]
