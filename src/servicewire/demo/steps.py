"""The demo's steps: each calls the bundled site through :class:`Client` and
checks what came back, and :class:`Report` prints them as aligned lines.

:mod:`servicewire.demo.run` starts the site, runs these steps and stops it.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np

from servicewire.client import Client
from servicewire.errors import ServiceError

START_TIMEOUT = 60.0  # seconds for the site to migrate, issue a key and listen
STOP_TIMEOUT = 5.0  # seconds for each stage of stopping: ask, terminate, kill
CALL_TIMEOUT = 120.0  # seconds the client waits for a connection or for data

MB = 1_000_000
ARRAY_BYTES = 100 * MB
ARRAY_LENGTH = ARRAY_BYTES // 8  # float64
COMPARE_LENGTH = 1_000_000  # floats sent in both codecs for the comparison
FACTOR = 2.5

RICH_VALUES: dict[str, Any] = {
    "when": datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=timezone(timedelta(hours=2))),
    "day": date(2025, 3, 14),
    "span": timedelta(days=1, seconds=5),
    "price": Decimal("19.99"),
    "ident": uuid.UUID("6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"),
    "tags": {"red", "green"},
    "pair": (1, "two"),
    "z": complex(1, -2),
    "raw": b"\x00\xff",
    "huge": 2**100,
}

INVOICE = [("coffee", Decimal("4.50")), ("cake", Decimal("3.20")), ("tip", Decimal("1.30"))]
ISSUED = date(2025, 3, 14)


class CheckFailed(Exception):
    """A call answered, but not with what the demo expected."""


class StartFailed(Exception):
    """The site did not come up; the message says why."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Site:
    """The running demo site, as its handshake line described it."""

    process: subprocess.Popen[bytes]
    url: str
    key: str
    pid: int


@dataclass
class Outcome:
    """What one step shows: a result, its duration, and more lines if needed.

    ``nbytes`` is the payload the step moved, for a rate; ``note`` qualifies
    the time ("each").
    """

    result: str
    seconds: float
    nbytes: int = 0
    note: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def figure(self) -> str:
        return format_figure(self.seconds, self.nbytes, self.note)


def format_figure(seconds: float, nbytes: int = 0, note: str = "") -> str:
    """Milliseconds, then MB/s when bytes moved: right-aligned, so columns line up."""
    figure = f"{seconds * 1000:>10,.1f} ms"
    if nbytes:
        figure += f"  {nbytes / MB / seconds:>6,.0f} MB/s"
    if note:
        figure += f"  {note}"
    return figure


class Report:
    """Prints aligned lines (step, result, figure) as steps finish; keeps failures.

    Lines are flushed one by one so that a watching program (or person) sees
    progress during the long array steps.
    """

    STEP_WIDTH = 17
    RESULT_WIDTH = 62

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def line(self, step: str, result: str, figure: str = "") -> None:
        text = f"  {step:<{self.STEP_WIDTH}} {result:<{self.RESULT_WIDTH}} {figure}"
        print(text.rstrip(), flush=True)

    def detail(self, text: str) -> None:
        self.line("", f"  {text}")

    def run(self, step: str, action: Callable[[], Outcome]) -> None:
        """Run one step; a failure is reported and the demo goes on to the next."""
        try:
            outcome = action()
        except Exception as exc:  # every step is independent of the others
            self.failed.append(step)
            self.line(step, f"FAILED: {describe_error(exc)}")
            return
        self.passed += 1
        self.line(step, outcome.result, outcome.figure)
        for text in outcome.details:
            self.detail(text)


def describe_error(exc: BaseException) -> str:
    # The client keeps the key out of its messages, so they are safe to print.
    if isinstance(exc, ServiceError | CheckFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _show(value: Any) -> str:
    # ISO text is shorter than the repr of an aware datetime; the type is
    # printed next to it anyway.
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


# -- the steps: each calls the site and checks what came back -------------


def _add(sw: Client) -> Outcome:
    result, seconds = timed(lambda: sw.add(a=1, b=2))
    _check(result == 3 and type(result) is int, f"add(a=1, b=2) returned {result!r}")
    return Outcome(f"add(a=1, b=2) -> {result!r}", seconds, note="first call")


def _add_repeated(sw: Client) -> Outcome:
    calls = 100
    _, seconds = timed(lambda: [sw.add(a=i, b=i) for i in range(calls)])
    return Outcome(f"{calls} more calls of add on one connection", seconds / calls, note="each")


def _rich_values(sw: Client) -> Outcome:
    answer, seconds = timed(lambda: sw.describe(**RICH_VALUES))
    back, seen = answer["values"], answer["types"]
    for name, sent in RICH_VALUES.items():
        _check(
            back[name] == sent and type(back[name]) is type(sent),
            f"{name}: sent {sent!r}, got back {back[name]!r}",
        )
        _check(seen[name] == type(sent).__name__, f"{name}: the server saw a {seen[name]}")
    _check(back["when"].utcoffset() == RICH_VALUES["when"].utcoffset(), "the offset changed")
    details = [
        f"{name:<6} {_show(value):<45} {type(value).__name__:<10} server saw {seen[name]}"
        for name, value in back.items()
    ]
    return Outcome(
        f"describe: {len(RICH_VALUES)} values back equal, with the same types",
        seconds,
        details=details,
    )


def _invoice(sw: Client) -> Outcome:
    answer, seconds = timed(lambda: sw.billing.invoice_total(items=INVOICE, issued=ISSUED))
    _check(answer["total"] == Decimal("9.00"), f"total {answer['total']!r}")
    _check(type(answer["total"]) is Decimal, "the total is not a Decimal")
    _check(answer["due"] == date(2025, 4, 13), f"due {answer['due']!r}")
    return Outcome(f"total {answer['total']!r}, due {answer['due']!r}", seconds)


def _array_up(sw: Client, samples: np.ndarray[Any, Any]) -> Outcome:
    stats, seconds = timed(lambda: sw.science.stats(samples=samples))
    _check(stats["count"] == samples.size, f"the server counted {stats['count']} samples")
    _check(bool(np.isclose(stats["mean"], samples.mean())), f"mean {stats['mean']}")
    return Outcome(
        f"science.stats: {samples.nbytes / MB:.0f} MB float64 up, mean {stats['mean']:.6f} back",
        seconds,
        nbytes=samples.nbytes,
    )


def _array_down(sw: Client) -> Outcome:
    ramp, seconds = timed(lambda: sw.science.ramp(count=ARRAY_LENGTH))
    _check(isinstance(ramp, np.ndarray), f"got a {type(ramp).__name__}")
    _check(ramp.dtype == np.float64 and ramp.shape == (ARRAY_LENGTH,), "wrong dtype or shape")
    _check(bool(np.array_equal(ramp, np.arange(ARRAY_LENGTH, dtype=np.float64))), "wrong values")
    return Outcome(
        f"science.ramp: {ramp.nbytes / MB:.0f} MB float64 down, values verified",
        seconds,
        nbytes=ramp.nbytes,
    )


def _array_round_trip(sw: Client, samples: np.ndarray[Any, Any]) -> Outcome:
    scaled, seconds = timed(lambda: sw.science.scale(samples=samples, factor=FACTOR))
    _check(isinstance(scaled, np.ndarray), f"got a {type(scaled).__name__}")
    _check(scaled.dtype == np.float64 and scaled.shape == samples.shape, "wrong dtype or shape")
    # Multiplying by the same float is exact on both sides: equality, not closeness.
    _check(bool(np.array_equal(scaled, samples * FACTOR)), "the values differ")
    return Outcome(
        f"science.scale: {samples.nbytes / MB:.0f} MB up, x{FACTOR}, back; values verified",
        seconds,
        nbytes=2 * samples.nbytes,
        note="both ways",
    )


def _typed_error(sw: Client) -> Outcome:
    started = time.perf_counter()
    try:
        balance = sw.bank.withdraw(account="bob", amount=Decimal("20.00"))
    except ServiceError as error:
        seconds = time.perf_counter() - started
        _check(error.type == "Overdrawn" and error.status == 409, f"got {error!r}")
        return Outcome(
            f"caught {error.type} ({error.status}): {error.message}",
            seconds,
            details=[f"details {error.details!r}"],
        )
    raise CheckFailed(f"withdraw did not fail; it returned {balance!r}")


def _json_codec(url: str, key: str) -> Outcome:
    with Client(url, key, codec="json", timeout=CALL_TIMEOUT) as js:
        items = [[what, str(amount)] for what, amount in INVOICE]
        answer, seconds = timed(
            lambda: js.billing.invoice_total(items=items, issued=ISSUED.isoformat())
        )
    _check(answer == {"total": "9.00", "lines": 3, "due": "2025-04-13"}, f"got {answer!r}")
    return Outcome(
        "invoice_total: strings in, typed by the hints, JSON out",
        seconds,
        details=[f"-> {answer!r}"],
    )


def _codec_comparison(sw: Client, url: str, key: str, samples: np.ndarray[Any, Any]) -> Outcome:
    part = samples[:COMPARE_LENGTH]
    _, packed = timed(lambda: sw.science.stats(samples=part))
    with Client(url, key, codec="json", timeout=CALL_TIMEOUT) as js:
        _, as_json = timed(lambda: js.science.stats(samples=part))
    return Outcome(
        f"science.stats, {part.nbytes / MB:.0f} MB in JSON: {as_json / packed:.0f}x msgpack's "
        f"{_ms(packed)}",
        as_json,
        nbytes=part.nbytes,
    )


def call_site(site: Site, report: Report) -> None:
    """Run every step against the running site, reporting each as it finishes."""
    report.line("server", f"{site.url} (pid {site.pid})")
    # The key id is public (it names the key in lists and logs); the secret
    # after it is not, and is never printed.
    report.line("key", f"{site.key[:16]}… for client 'demo', scope 'science'")
    print(flush=True)
    rng = np.random.default_rng(2025)
    samples = rng.random(ARRAY_LENGTH)
    with Client(site.url, site.key, timeout=CALL_TIMEOUT) as sw:
        report.run("add", lambda: _add(sw))
        report.run("add, warm", lambda: _add_repeated(sw))
        report.run("rich values", lambda: _rich_values(sw))
        report.run("invoice", lambda: _invoice(sw))
        report.run("array up", lambda: _array_up(sw, samples))
        report.run("array down", lambda: _array_down(sw))
        report.run("array round trip", lambda: _array_round_trip(sw, samples))
        report.run("typed error", lambda: _typed_error(sw))
        report.run("json codec", lambda: _json_codec(site.url, site.key))
        report.run("json vs msgpack", lambda: _codec_comparison(sw, site.url, site.key, samples))
