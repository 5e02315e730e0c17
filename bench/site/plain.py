"""A plain Django view with orjson: what a careful developer writes by hand.

orjson serializes numpy arrays natively (``OPT_SERIALIZE_NUMPY``), so this is
JSON at its fastest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from bench.site.data import make_array


def _json_view(func: Callable[[dict[str, Any]], Any]) -> Callable[[HttpRequest], HttpResponse]:
    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        result = func(orjson.loads(request.body))
        body = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        return HttpResponse(body, content_type="application/json")

    return view


add = _json_view(lambda args: int(args["a"]) + int(args["b"]))
download = _json_view(lambda args: make_array(int(args["n"])))
upload = _json_view(lambda args: int(np.asarray(args["data"], dtype=np.float64).nbytes))
