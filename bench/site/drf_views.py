"""Django REST Framework: function views with DRF's JSON parser and renderer."""

from __future__ import annotations

import numpy as np
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from bench.site.data import make_array


@api_view(["POST"])
def add(request: Request) -> Response:
    """Add two integers."""
    return Response(int(request.data["a"]) + int(request.data["b"]))


@api_view(["POST"])
def download(request: Request) -> Response:
    """A float64 array of ``n`` elements, as a JSON list."""
    return Response(make_array(int(request.data["n"])).tolist())


@api_view(["POST"])
def upload(request: Request) -> Response:
    """The size in bytes of the array received."""
    return Response(int(np.asarray(request.data["data"], dtype=np.float64).nbytes))
