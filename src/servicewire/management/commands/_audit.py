"""``manage.py servicewire audit``: read and prune the audit trail.

::

    manage.py servicewire audit [--client NAME] [--service NAME] [--since DURATION] [--json]
    manage.py servicewire audit prune --older-than DURATION

Entries are printed oldest first, streamed from the database (a trail of
millions of rows needs no memory for them): a table for people, or with
``--json`` one JSON object per line with the keys of
:data:`servicewire.audit.FIELDS`. (Django skips modules whose names start
with ``_``, so this is not a command of its own.)
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from servicewire import audit
from servicewire.auth import parse_duration
from servicewire.models import AuditEntry

# Column titles and widths of the table; the last column takes what it needs.
_COLUMNS = (
    ("TIME", 19),
    ("STATUS", 6),
    ("CLIENT", 16),
    ("KEY ID", 12),
    ("CRED", 9),
    ("SERVICE", 24),
    ("ERROR", 16),
    ("MS", 9),
    ("IN", 9),
    ("OUT", 9),
    ("ADDRESS", 15),
    ("REQUEST ID", 0),
)


def add_arguments(resources: Any, base: Sequence[argparse.ArgumentParser]) -> None:
    """Declare ``audit`` and ``audit prune`` on the command's sub-parsers."""
    parser = resources.add_parser("audit", parents=list(base), help="read or prune the audit trail")
    parser.add_argument("--client", metavar="NAME", help="only this client's calls")
    parser.add_argument("--service", metavar="NAME", help="only calls of this service")
    parser.add_argument(
        "--since", metavar="DURATION", help="only the last DURATION, e.g. 15m, 12h or 7d"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line instead of a table"
    )
    actions = parser.add_subparsers(dest="action", required=False, metavar="{prune}")
    prune = actions.add_parser("prune", parents=list(base), help="delete old entries")
    prune.add_argument(
        "--older-than",
        dest="older_than",
        required=True,
        metavar="DURATION",
        help="delete the entries older than this, e.g. 90d",
    )


def handle(command: BaseCommand, options: dict[str, Any]) -> None:
    """Run ``audit`` (list) or ``audit prune``."""
    if options.get("action") == "prune":
        older_than = _duration("--older-than", options["older_than"])
        deleted = audit.prune(older_than)
        command.stdout.write(f"Deleted {deleted} audit entries older than {options['older_than']}.")
        return
    since = options.get("since")
    rows = audit.select(
        client=options.get("client"),
        service=options.get("service"),
        since=_duration("--since", since) if since is not None else None,
    ).iterator(chunk_size=2000)
    if options.get("json"):
        for row in rows:
            # ASCII only: no raw control character, C1 included, reaches a terminal.
            command.stdout.write(json.dumps(audit.as_dict(row)))
        return
    _table(command, rows)


def _duration(option: str, text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None


def _table(command: BaseCommand, rows: Any) -> None:
    command.stdout.write(_line(title for title, _ in _COLUMNS))
    count = 0
    for row in rows:
        count += 1
        command.stdout.write(_line(_cells(row)))
    if not count:
        command.stdout.write("No audit entries.")


def _cells(row: AuditEntry) -> list[str]:
    return [
        timezone.localtime(row.time).strftime("%Y-%m-%d %H:%M:%S"),
        str(row.status),
        row.client_name or "-",
        row.key_id or "-",
        row.credential or "-",
        row.service or "-",
        row.error_type or "-",
        f"{row.duration_ms:.1f}",
        str(row.bytes_in),
        str(row.bytes_out),
        row.remote_addr or "-",
        row.request_id or "-",
    ]


def _line(cells: Any) -> str:
    parts = []
    for cell, (_, width) in zip(cells, _COLUMNS, strict=True):
        text = _printable(cell)
        if width and len(text) > width:
            text = text[: width - 1] + "…"
        parts.append(text.ljust(width))
    return "  ".join(parts).rstrip()


def _printable(text: str) -> str:
    # Stored values are escaped already; this guards the terminal against a
    # row that reached the table some other way.
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in text)
