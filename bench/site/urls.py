"""Every peer of the bench under one URL space of one site."""

from django.urls import include, path

from bench.site import bare, drf_views, ninja_api, original, plain, rpc

urlpatterns = [
    path("services/", include("servicewire.urls")),
    path("bare/<str:name>", bare.call),
    path("original/add", original.add),
    path("original/download", original.download),
    path("original/upload", original.upload),
    path("orjson/add", plain.add),
    path("orjson/download", plain.download),
    path("orjson/upload", plain.upload),
    path("drf/add", drf_views.add),
    path("drf/download", drf_views.download),
    path("drf/upload", drf_views.upload),
    path("ninja/", ninja_api.api.urls),
    path("rpc/", rpc.server.view),
]
