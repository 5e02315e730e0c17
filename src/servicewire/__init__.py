"""servicewire: plain Python functions as private web services, called in one line."""

from servicewire.errors import ServiceError

__all__ = ["ServiceError"]
__version__ = "0.1.0"
