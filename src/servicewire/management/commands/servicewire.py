"""``manage.py servicewire``: client applications and their API keys.

::

    manage.py servicewire client add NAME [--scope LABEL]...
    manage.py servicewire client list
    manage.py servicewire key create NAME [--expires-in DURATION]
    manage.py servicewire key list
    manage.py servicewire key revoke KEY_ID

``key create`` prints the new key alone on the last line of its output, so a
script can take it with ``| tail -n 1``; everything a person should read
comes before it. No other form prints a secret or a hash.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from servicewire.auth import KEY_ID_LENGTH, issue_key, parse_duration
from servicewire.models import ApiKey, ClientApp, clean_scopes

_NAME_MAX_LENGTH = ClientApp._meta.get_field("name").max_length or 100
_KEY_ID_RE = re.compile(rf"[A-Za-z0-9]{{{KEY_ID_LENGTH}}}")
# A whole key pasted where its id was expected: take the id, never echo the rest.
_WHOLE_KEY_RE = re.compile(rf"sw_(?P<key_id>[A-Za-z0-9]{{{KEY_ID_LENGTH}}})_.*", re.DOTALL)


class Command(BaseCommand):
    """Add and list client applications; create, list and revoke their API keys."""

    help = "Manage servicewire client applications and their API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the ``client`` and ``key`` sub-commands."""
        resources = parser.add_subparsers(dest="resource", required=True, metavar="{client,key}")
        base = [_base_options()]

        client = resources.add_parser("client", parents=base, help="client applications")
        client_actions = client.add_subparsers(dest="action", required=True, metavar="{add,list}")
        client_add = client_actions.add_parser("add", parents=base, help="add a client application")
        client_add.add_argument("name", metavar="NAME")
        client_add.add_argument(
            "--scope",
            dest="scopes",
            action="append",
            default=[],
            metavar="LABEL",
            help="grant a scope label ([a-z0-9_.:-]); repeat for several",
        )
        client_actions.add_parser("list", parents=base, help="list client applications")

        key = resources.add_parser("key", parents=base, help="API keys")
        key_actions = key.add_subparsers(
            dest="action", required=True, metavar="{create,list,revoke}"
        )
        key_create = key_actions.add_parser(
            "create", parents=base, help="create a key; it is shown once"
        )
        key_create.add_argument("name", metavar="NAME", help="the client application's name")
        key_create.add_argument(
            "--expires-in",
            dest="expires_in",
            metavar="DURATION",
            help="lifetime such as 90d, 12h, 30m or 45s (default: never expires)",
        )
        key_actions.add_parser("list", parents=base, help="list keys (never their secrets)")
        key_revoke = key_actions.add_parser(
            "revoke", parents=base, help="revoke a key from the next call on"
        )
        key_revoke.add_argument("key_id", metavar="KEY_ID")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the chosen sub-command."""
        action = f"{options['resource']} {options['action']}"
        if action == "client add":
            self.client_add(options["name"], options["scopes"])
        elif action == "client list":
            self.client_list()
        elif action == "key create":
            self.key_create(options["name"], options["expires_in"])
        elif action == "key list":
            self.key_list()
        else:
            self.key_revoke(options["key_id"])

    def client_add(self, name: str, scopes: Sequence[str]) -> None:
        """Create a client application with the given scope labels."""
        name = name.strip()
        if not name:
            raise CommandError("The client name must not be empty.")
        if len(name) > _NAME_MAX_LENGTH:
            raise CommandError(f"The client name is longer than {_NAME_MAX_LENGTH} characters.")
        try:
            labels = clean_scopes(scopes)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        if ClientApp.objects.filter(name=name).exists():
            raise CommandError(f"A client named {name!r} already exists.")
        try:
            # The savepoint keeps a concurrent duplicate from poisoning an
            # outer transaction (call_command inside a test or a script).
            with transaction.atomic():
                ClientApp.objects.create(name=name, scopes=labels)
        except IntegrityError:
            raise CommandError(f"A client named {name!r} already exists.") from None
        granted = ", ".join(labels) if labels else "none"
        self.stdout.write(f"Created client {name!r} (scopes: {granted}).")
        self.stdout.write(f"Create its first key with: manage.py servicewire key create {name}")

    def client_list(self) -> None:
        """Print every client with its state, scopes and number of keys."""
        clients = ClientApp.objects.annotate(key_count=Count("keys")).order_by("name")
        rows = [
            (
                client.name,
                "yes" if client.is_active else "no",
                ", ".join(sorted(client.scope_set)) or "-",
                str(client.key_count),
            )
            for client in clients
        ]
        if not rows:
            self.stdout.write("No client applications.")
            return
        self._table(("NAME", "ACTIVE", "SCOPES", "KEYS"), rows)

    def key_create(self, name: str, expires_in: str | None) -> None:
        """Issue a key for the named client and print it once, on the last line."""
        client = ClientApp.objects.filter(name=name).first()
        if client is None:
            raise CommandError(
                f"No client named {name!r}. Add it with: manage.py servicewire client add {name}"
            )
        expires = None
        if expires_in is not None:
            try:
                lifetime = parse_duration(expires_in)
            except ValueError as exc:
                raise CommandError(f"--expires-in: {exc}") from None
            if not lifetime:
                raise CommandError("--expires-in: a key must live longer than 0 seconds.")
            expires = timezone.now() + lifetime
        key, plain = issue_key(client, expires=expires)
        until = f"expires {_when(expires)}" if expires else "never expires"
        if not client.is_active:
            self.stderr.write(f"Client {name!r} is disabled: its keys are refused until enabled.")
        self.stdout.write(
            f"Key {key.key_id} for client {client.name}, {until}; shown once, store it now:"
        )
        self.stdout.write(plain)

    def key_list(self) -> None:
        """Print every key's id, client, dates and state; never a secret or hash."""
        keys = ApiKey.objects.select_related("client").order_by("client__name", "-created")
        rows = [
            (
                key.key_id,
                key.client.name,
                _when(key.created),
                _when(key.expires, none="never"),
                _when(key.last_used, none="never"),
                key.state,
            )
            for key in keys
        ]
        if not rows:
            self.stdout.write("No API keys.")
            return
        self._table(("KEY ID", "CLIENT", "CREATED", "EXPIRES", "LAST USED", "STATE"), rows)

    def key_revoke(self, given: str) -> None:
        """Revoke a key; the next call that presents it is refused."""
        whole = _WHOLE_KEY_RE.fullmatch(given.strip())
        key_id = whole["key_id"] if whole else given.strip()
        if not _KEY_ID_RE.fullmatch(key_id):
            raise CommandError(
                f"Not a key id: {key_id!r} (ids are {KEY_ID_LENGTH} letters and digits; "
                "see: manage.py servicewire key list)"
            )
        key = ApiKey.objects.select_related("client").filter(key_id=key_id).first()
        if key is None:
            raise CommandError(f"No API key with id {key_id!r}.")
        now = timezone.now()
        # Conditional update: of two concurrent revocations the first date stands.
        revoked = ApiKey.objects.filter(pk=key.pk, revoked__isnull=True).update(revoked=now)
        if not revoked:
            key.refresh_from_db(fields=["revoked"])
            self.stdout.write(f"Key {key_id} was already revoked on {_when(key.revoked)}.")
            return
        self.stdout.write(
            f"Revoked key {key_id} of client {key.client.name}; it is refused from the next call."
        )

    def _table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write(line.rstrip())


def _base_options() -> CommandParser:
    # argparse hands everything after a sub-command to the sub-command's
    # parser, so Django's own options must be known there too, as in
    # ``manage.py servicewire key list --settings=site.settings``. SUPPRESS
    # keeps an absent option from overwriting the value Django parsed.
    options = CommandParser(add_help=False, argument_default=argparse.SUPPRESS)
    options.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3])
    options.add_argument("--settings")
    options.add_argument("--pythonpath")
    for flag in ("--traceback", "--no-color", "--force-color", "--skip-checks"):
        options.add_argument(flag, action="store_true")
    return options


def _when(moment: datetime | None, *, none: str = "-") -> str:
    if moment is None:
        return none
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()
