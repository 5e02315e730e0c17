"""django-modern-rpc: the operations as JSON-RPC 2.0 procedures on one entry point."""

from __future__ import annotations

import numpy as np
from modernrpc.server import RpcServer

from bench.site.data import make_array

server = RpcServer(register_system_procedures=False)


@server.register_procedure
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.register_procedure
def download(n: int) -> list[float]:
    """A float64 array of ``n`` elements, as a JSON list."""
    return make_array(n).tolist()  # type: ignore[no-any-return]


@server.register_procedure
def upload(data: list[float]) -> int:
    """The size in bytes of the array received."""
    return int(np.asarray(data, dtype=np.float64).nbytes)
