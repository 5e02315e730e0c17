"""Services of the test site, one per behaviour the tests check."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid
from typing import Any

from django.http import HttpResponse

from servicewire import ServiceError, service


class Overdrawn(ServiceError):
    status = 409


@service
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@service
def echo(value: Any = None) -> Any:
    """Return the value as it arrived."""
    return value


@service
def echo_untyped(value):  # type: ignore[no-untyped-def]
    """An unannotated parameter takes any value."""
    return value


@service(name="types.typed")
def typed(
    when: datetime.datetime,
    day: datetime.date,
    amount: decimal.Decimal,
    ident: uuid.UUID,
    pair: tuple[int, str],
    tags: set[str],
    span: datetime.timedelta = datetime.timedelta(0),
) -> dict[str, Any]:
    """Arguments converted from their type hints; returns their types and values."""
    return {
        "when": when,
        "day": day,
        "amount": amount,
        "ident": ident,
        "pair": pair,
        "tags": tags,
        "span": span,
        "types": [type(v).__name__ for v in (when, day, amount, ident, pair, tags, span)],
    }


@service
def withdraw(account: str, amount: decimal.Decimal) -> decimal.Decimal:
    """Always overdrawn."""
    raise Overdrawn("balance too low", details={"missing": amount, "account": account})


@service(name="science.spectrum", scopes=["science"])
def spectrum(samples: np.ndarray, window: int = 4) -> dict[str, Any]:  # noqa: F821
    """Sum of samples and a scaled copy (needs the 'science' scope)."""
    return {"total": float(samples.sum()), "scaled": samples * 2, "window": window}


@service(name="science.double")
def double(samples: "np.ndarray") -> "np.ndarray":  # noqa: F821, UP037
    """The array times two, same dtype."""
    return samples * 2


@service
async def slow_add(a: int, b: int) -> int:
    """An async service."""
    await asyncio.sleep(0)
    return a + b


@service
def boom() -> None:
    """Fails unexpectedly."""
    raise RuntimeError("secret internal detail")


@service
def raw() -> HttpResponse:
    """Returns an HttpResponse, passed through untouched."""
    return HttpResponse(b"plain text", content_type="text/plain", status=201)


@service
def kwargs_ok(a: int, **rest: Any) -> dict[str, Any]:
    """Accepts any extra keyword argument."""
    return {"a": a, **rest}


@service
def whoami() -> int:
    """The serving process's id: tells the workers apart."""
    import os

    return os.getpid()


@service(name="staff.report", permissions=["auth.view_user"])
def staff_report() -> str:
    """Needs the Django permission auth.view_user."""
    return "the report"


@service
def write_then_fail(name: str) -> None:
    """Writes a row, then fails: under ATOMIC_REQUESTS the row must roll back."""
    from servicewire.models import ClientApp

    ClientApp.objects.create(name=name)
    raise RuntimeError("failed after writing")


class _ShellGadget:
    """Pickles as a call of os.system: what a hostile server would answer."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, (self.command,))


@service(name="pickled.gadget")
def pickled_gadget(path: str) -> HttpResponse:
    """A response labelled pickle that would create ``path`` if it were unpickled unchecked."""
    import pickle
    import shlex

    body = pickle.dumps(_ShellGadget(f"touch {shlex.quote(path)}"))
    return HttpResponse(body, content_type="application/x-python-pickle")


@service(name="pickled.array_flags")
def array_flags(value: Any) -> dict[str, bool]:
    """How an array argument arrived: a writable, aligned view (no copy) or its own data."""
    return {
        "owndata": bool(value.flags.owndata),
        "writeable": bool(value.flags.writeable),
        "aligned": bool(value.flags.aligned),
    }
