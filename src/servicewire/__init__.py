"""servicewire: plain Python functions as private web services, called in one line.

On the site::

    from servicewire import service

    @service
    def add(a: int, b: int) -> int:
        return a + b

In the calling program (no Django needed)::

    from servicewire import Client

    with Client("https://example.org/services/") as sw:
        sw.add(a=1, b=2)

The wire error types live in :mod:`servicewire.errors`.
"""

from servicewire.client import AsyncClient, Client
from servicewire.errors import ServiceError
from servicewire.registry import service

__all__ = ["AsyncClient", "Client", "ServiceError", "service"]
__version__ = "0.1.0"
