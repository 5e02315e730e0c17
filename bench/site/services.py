"""The servicewire services, found by autodiscovery as in any site."""

from __future__ import annotations

import numpy as np

from bench.site.data import make_array
from servicewire import service


@service
def add(a: int, b: int) -> int:
    """Add two integers: the small call of W1 and W2."""
    return a + b


@service
def download(n: int) -> np.ndarray:
    """A float64 array of ``n`` elements, created here."""
    return make_array(n)


@service
def upload(data: np.ndarray) -> int:
    """The size in bytes of the array received."""
    return int(data.nbytes)


# The same three operations as ``async def``, for the site served by uvicorn:
# servicewire awaits them on the event loop.


@service
async def async_add(a: int, b: int) -> int:
    """``add`` as a coroutine."""
    return a + b


@service
async def async_download(n: int) -> np.ndarray:
    """``download`` as a coroutine."""
    return make_array(n)


@service
async def async_upload(data: np.ndarray) -> int:
    """``upload`` as a coroutine."""
    return int(data.nbytes)
