"""The audit trail: one entry per request to the mount, allowed or refused;
and reading and pruning it (for the management command).

The view fills an :class:`AuditRecord` as the request goes and hands it to
:func:`write` once, in a ``finally``, after the response is built and before
a byte of it is sent: a service that raises, a rolled-back transaction or a
client that hangs up mid-response cannot lose the entry. The entry is one
INSERT in autocommit mode; the view runs outside ``ATOMIC_REQUESTS``, so the
service's rollback does not take the entry with it.

What is stored is made safe first. Control and format characters are escaped
(``\\x1b`` is stored as the four characters ``\\x1b``), so that the trail cannot
forge lines or recolour a terminal; values are cut to their column's size; and
anything shaped like a credential (an API key, its secret alone, a token, a
signature, any long opaque run) is replaced by ``[redacted]``. The
``Authorization`` header is never read here. A service name is stored only if
it is a valid service name, since a client may paste anything into the URL.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any

from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from servicewire.auth import Caller
from servicewire.conf import get_settings
from servicewire.models import AuditEntry
from servicewire.registry import NAME_RE

logger = logging.getLogger("servicewire.audit")

# The names the views use for the mount's own endpoints.
_ENDPOINT_NAMES = frozenset({"", "openapi.json", "_auth/token"})
INVALID_NAME = "<invalid name>"
REDACTED = "[redacted]"
# An API key (sw_<id>_<secret>, even cut short), a token (swt.…), and any run of
# 40 or more characters of the alphabets that keys, tokens and signatures
# (base64) are made of. Ordinary values (words, versions, a UUID's 36
# characters, a 32-digit hex request id) are shorter.
_SECRET_RE = re.compile(r"sw_[A-Za-z0-9]+_[A-Za-z0-9]*|swt\.\S*|[A-Za-z0-9+/=_.~-]{40,}")


@dataclass
class AuditRecord:
    """What the view learns about a request as it goes; written once at the end.

    ``time`` is when the request arrived; ``started`` the monotonic clock then,
    for the duration.
    """

    request_id: str
    remote_addr: str
    user_agent: str
    service: str = ""
    caller: Caller | None = None
    bytes_in: int = 0
    error_type: str = ""
    time: datetime = field(default_factory=timezone.now)
    started: float = field(default_factory=perf_counter)


def looks_secret(text: str) -> bool:
    """Whether ``text`` holds something shaped like a credential.

    The views refuse such a client-sent request id (and make their own) so
    that it is neither echoed nor stored.
    """
    return _SECRET_RE.search(text) is not None


def escape(text: str) -> str:
    """``text`` with backslashes and control or format characters escaped.

    Example::

        escape("curl\\x1b[31m")   # 'curl\\\\x1b[31m'
    """
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # printable ASCII holds no control or format character
    out: list[str] = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            # Cf holds the bidirectional overrides that reorder what a
            # reader sees; Zl and Zp break lines like a newline does.
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def clean(text: str, limit: int) -> str:
    """``text`` redacted, escaped and cut to ``limit`` characters (marked with …)."""
    safe = escape(_SECRET_RE.sub(REDACTED, text))
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def service_name(name: str) -> str:
    """The name to store for the requested service: itself if it is a valid
    service name, else :data:`INVALID_NAME` (the client may have pasted a
    secret into the URL)."""
    if name in _ENDPOINT_NAMES or (NAME_RE.fullmatch(name) and not looks_secret(name)):
        return name
    return INVALID_NAME


def _limit(name: str) -> int:
    length: int | None = getattr(AuditEntry._meta.get_field(name), "max_length", None)
    return length or 100


_LIMITS = {
    name: _limit(name)
    for name in (
        "client_name",
        "key_id",
        "credential",
        "service",
        "error_type",
        "remote_addr",
        "user_agent",
        "request_id",
    )
}


def _values(record: AuditRecord, status: int, bytes_out: int) -> dict[str, Any]:
    """The entry's column values by attribute name, every text made safe."""
    caller = record.caller
    client = caller.client if caller else None
    return {
        "time": record.time,
        "client_id": client.pk if client else None,
        "client_name": clean(client.name, _LIMITS["client_name"]) if client else "",
        "key_id": clean(caller.key_id, _LIMITS["key_id"]) if caller else "",
        "credential": clean(caller.credential, _LIMITS["credential"]) if caller else "",
        "service": clean(service_name(record.service), _LIMITS["service"]),
        "status": status,
        "error_type": clean(record.error_type, _LIMITS["error_type"]),
        "duration_ms": round((perf_counter() - record.started) * 1000, 3),
        "bytes_in": record.bytes_in,
        "bytes_out": bytes_out,
        "remote_addr": clean(record.remote_addr, _LIMITS["remote_addr"]),
        "user_agent": clean(record.user_agent, _LIMITS["user_agent"]),
        "request_id": clean(record.request_id, _LIMITS["request_id"]),
    }


def entry(record: AuditRecord, status: int, bytes_out: int) -> AuditEntry:
    """The unsaved entry for ``record``, every text field made safe."""
    return AuditEntry(**_values(record, status, bytes_out))


# The INSERT of one entry, per database alias and vendor; the columns in the
# order of _FIELDS. Built once: a call pays for the statement alone, not for a
# model instance, its signals and the SQL compiler (about as much again).
_FIELDS = tuple(f for f in AuditEntry._meta.concrete_fields if not f.primary_key)
_INSERTS: dict[tuple[str, str], str] = {}


def _insert_sql(connection: Any) -> str:
    found = _INSERTS.get((connection.alias, connection.vendor))
    if found is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in _FIELDS)
        placeholders = ", ".join(["%s"] * len(_FIELDS))
        # Only the model's own table and column names, quoted: no input of any call.
        table = quote(AuditEntry._meta.db_table)
        found = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
        _INSERTS[(connection.alias, connection.vendor)] = found
    return found


def _binds_on_server(connection: Any) -> bool:
    """Whether the INSERT may go straight to psycopg 3, outside Django's cursor.

    Not inside a transaction (its savepoint is Django's), nor where Django is
    asked to see every query (``DEBUG``, a test's query capture, an
    ``execute_wrapper``).
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    if connection.queries_logged or connection.execute_wrappers:
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def _insert(alias: str, values: dict[str, Any]) -> None:
    """One INSERT of ``values``, or a model save where someone listens to it."""
    if pre_save.has_listeners(AuditEntry) or post_save.has_listeners(AuditEntry):
        # A site's receivers of the model's signals keep getting them.
        AuditEntry(**values).save(using=alias, force_insert=True)
        return
    connection = connections[alias]
    # Values go through their fields' own conversion for this database (a
    # datetime becomes text on SQLite); the others are plain str, int, float.
    params = [
        f.get_db_prep_save(values[f.attname], connection)
        if f.attname == "time"
        else values[f.attname]
        for f in _FIELDS
    ]
    if _binds_on_server(connection):
        # Django's cursor wrapper and psycopg's quoting of fourteen values into
        # the SQL text cost more CPU than the rest of the entry; psycopg's own
        # cursor sends them as parameters. Unprepared (an unnamed statement),
        # so that poolers such as PgBouncer see nothing new. Django still
        # manages the connection: its health check, (re)connection, and error
        # wrapping, which marks the connection for a check when the request ends.
        import psycopg

        connection.close_if_health_check_failed()
        connection.ensure_connection()
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(_insert_sql(connection), params, prepare=False)
        return
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection), params)


def write(record: AuditRecord, status: int, bytes_out: int) -> None:
    """Store one entry for the request; never raises into the response.

    Nothing is written when the ``AUDIT`` setting is off. A failed write is
    logged (its error type and request id; never the entry's values) and the
    response goes out as it would have.
    """
    try:
        if not get_settings().AUDIT:
            return
        values = _values(record, status, bytes_out)
        alias = router.db_for_write(AuditEntry)
        if connections[alias].in_atomic_block:
            # Inside someone's transaction (a test, a wrapping view): a
            # savepoint keeps a failed insert from breaking it. Otherwise the
            # insert is its own autocommitted statement and needs no more.
            with transaction.atomic(using=alias):
                _insert(alias, values)
        else:
            _insert(alias, values)
    except Exception as exc:
        # Database messages can quote the values of the failed statement, so
        # only the error's type goes to the log.
        logger.error(
            "audit entry for request %s not written: %s",
            escape(record.request_id)[:128],
            type(exc).__name__,
        )


# The keys of ``audit --json`` lines, in order.
FIELDS = (
    "time",
    "client",
    "key_id",
    "service",
    "status",
    "error_type",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "remote_addr",
    "user_agent",
    "request_id",
)


def select(
    *, client: str | None = None, service: str | None = None, since: timedelta | None = None
) -> QuerySet[AuditEntry]:
    """Entries, oldest first, of one client and one service, in the last ``since``."""
    found = AuditEntry.objects.order_by("time", "pk")
    if client is not None:
        found = found.filter(client_name=client)
    if service is not None:
        found = found.filter(service=service)
    if since is not None:
        found = found.filter(time__gte=timezone.now() - since)
    return found


def as_dict(row: AuditEntry) -> dict[str, Any]:
    """An entry as the :data:`FIELDS` map; ``time`` in ISO 8601 with its offset."""
    return {
        "time": row.time.isoformat(),
        "client": row.client_name,
        "key_id": row.key_id,
        "service": row.service,
        "status": row.status,
        "error_type": row.error_type,
        "duration_ms": row.duration_ms,
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
        "remote_addr": row.remote_addr,
        "user_agent": row.user_agent,
        "request_id": row.request_id,
    }


def prune(older_than: timedelta) -> int:
    """Delete the entries older than ``older_than``; how many were deleted."""
    # Nothing refers to an entry, so this is one DELETE, not a row-by-row walk.
    deleted, _ = AuditEntry.objects.filter(time__lt=timezone.now() - older_than).delete()
    return deleted
