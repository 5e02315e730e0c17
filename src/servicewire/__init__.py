"""servicewire: plain Python functions as private web services, called in one line."""

from servicewire.errors import ServiceError
from servicewire.registry import service

__all__ = ["ServiceError", "service"]
__version__ = "0.1.0"
