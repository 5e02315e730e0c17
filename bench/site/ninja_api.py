"""django-ninja: the same three operations, validated from type hints by pydantic."""

from __future__ import annotations

import numpy as np
from django.http import HttpRequest
from ninja import NinjaAPI, Schema

from bench.site.data import make_array

api = NinjaAPI(urls_namespace="bench-ninja", docs_url=None)


class AddIn(Schema):
    a: int
    b: int


class DownloadIn(Schema):
    n: int


class UploadIn(Schema):
    data: list[float]


@api.post("/add", response=int)
def add(request: HttpRequest, payload: AddIn) -> int:
    """Add two integers."""
    return payload.a + payload.b


@api.post("/download", response=list[float])
def download(request: HttpRequest, payload: DownloadIn) -> list[float]:
    """A float64 array of ``n`` elements, as the JSON list a REST API returns."""
    return make_array(payload.n).tolist()  # type: ignore[no-any-return]


@api.post("/upload", response=int)
def upload(request: HttpRequest, payload: UploadIn) -> int:
    """The size in bytes of the array received."""
    return int(np.asarray(payload.data, dtype=np.float64).nbytes)
