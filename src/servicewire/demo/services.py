"""The demo's services: what a site's ``services.py`` looks like.

Each function is ordinary Python. ``@service`` registers it under a dotted
name; its type hints say what the arguments must be, so a call with a wrong
or missing argument gets a ``ValidationError`` naming it, and JSON callers'
ISO strings become dates and decimals.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from servicewire import ServiceError, service
from servicewire.errors import ValidationError

# The biggest array science.ramp makes: 256 MB of float64. A service that
# allocates on request bounds what one call may ask for.
MAX_RAMP = 2**25


@service
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@service
def describe(**values: Any) -> dict[str, Any]:
    """Return every argument unchanged, with the name of the type it arrived as.

    Over msgpack a ``datetime`` arrives as a ``datetime``, a ``set`` as a
    ``set``; over JSON the same call shows what JSON can carry.
    """
    return {
        "types": {name: type(value).__name__ for name, value in values.items()},
        "values": values,
    }


@service(name="billing.invoice_total")
def invoice_total(items: list[tuple[str, Decimal]], issued: date) -> dict[str, Any]:
    """Total an invoice's ``(description, amount)`` lines; payment is due in 30 days."""
    return {
        "total": sum((amount for _, amount in items), Decimal(0)),
        "lines": len(items),
        "due": issued + timedelta(days=30),
    }


@service(name="science.stats", scopes=["science"])
def stats(samples: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Summary statistics of an array (needs the 'science' scope)."""
    return {
        "count": int(samples.size),
        "mean": float(samples.mean()),
        "std": float(samples.std()),
        "min": float(samples.min()),
        "max": float(samples.max()),
    }


@service(name="science.scale", scopes=["science"])
def scale(samples: npt.NDArray[np.float64], factor: float) -> npt.NDArray[np.float64]:
    """The array times ``factor``, as float64 (needs the 'science' scope)."""
    # No copy for float64 input; other numeric dtypes are converted once.
    return np.asarray(samples, dtype=np.float64) * factor


@service(name="science.ramp", scopes=["science"])
def ramp(count: int) -> npt.NDArray[np.float64]:
    """The float64 array ``0, 1, ..., count - 1`` (needs the 'science' scope)."""
    if not 0 <= count <= MAX_RAMP:
        raise ValidationError(
            "count is out of range", details={"count": f"must be between 0 and {MAX_RAMP}"}
        )
    return np.arange(count, dtype=np.float64)


class Overdrawn(ServiceError):
    """The account holds less than the amount asked for."""

    status = 409


# The demo keeps balances fixed: a real service would read and update the
# account in the database, inside a transaction (select_for_update), never in
# process memory, which gunicorn workers do not share.
BALANCES = {"alice": Decimal("120.00"), "bob": Decimal("15.50")}


@service(name="bank.withdraw")
def withdraw(account: str, amount: Decimal) -> Decimal:
    """The balance left after withdrawing ``amount``; ``Overdrawn`` if too little."""
    balance = BALANCES.get(account)
    if balance is None:
        raise ValidationError("no such account", details={"account": account})
    if amount > balance:
        raise Overdrawn(
            f"{account} cannot withdraw {amount}",
            details={"balance": balance, "missing": amount - balance},
        )
    return balance - amount
