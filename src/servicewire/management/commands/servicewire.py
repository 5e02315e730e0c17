"""``manage.py servicewire``: client applications and their API keys.

::

    manage.py servicewire client add NAME [--scope LABEL]... [--rate 600/m] [--allow-pickle]
    manage.py servicewire client list
    manage.py servicewire client disable NAME
    manage.py servicewire client enable NAME
    manage.py servicewire key create NAME [--expires-in DURATION] [--public-key FILE_OR_VALUE]
    manage.py servicewire key list
    manage.py servicewire key revoke KEY_ID
    manage.py servicewire key rotate KEY_ID [--grace DURATION] [--expires-in DURATION]
    manage.py servicewire audit [--client NAME] [--service NAME] [--since DURATION] [--json]
    manage.py servicewire audit prune --older-than DURATION

``key create`` and ``key rotate`` print the new key alone on the last line of
their output, so a script can take it with ``| tail -n 1``; everything a person should read
comes before it. No other form prints a secret or a hash.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from servicewire.audit import looks_secret
from servicewire.auth import KEY_ID_LENGTH, issue_key, parse_duration
from servicewire.conf import get_settings
from servicewire.management.commands import _audit as audit_command
from servicewire.models import ApiKey, ClientApp, clean_scopes
from servicewire.throttle import parse_rate

_NAME_MAX_LENGTH = ClientApp._meta.get_field("name").max_length or 100
_KEY_ID_RE = re.compile(rf"[A-Za-z0-9]{{{KEY_ID_LENGTH}}}")
# A whole key pasted where its id was expected: take the id, never echo the rest.
_WHOLE_KEY_RE = re.compile(rf"sw_(?P<key_id>[A-Za-z0-9]{{{KEY_ID_LENGTH}}})_.*", re.DOTALL)
# A client has a day to move to its new key unless the operator says otherwise.
DEFAULT_GRACE = "24h"


class Command(BaseCommand):
    """Add and list client applications; create, list and revoke their API keys."""

    help = "Manage servicewire client applications and their API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the ``client`` and ``key`` sub-commands."""
        resources = parser.add_subparsers(
            dest="resource", required=True, metavar="{client,key,audit}"
        )
        base = [_base_options()]

        client = resources.add_parser("client", parents=base, help="client applications")
        client_actions = client.add_subparsers(
            dest="action", required=True, metavar="{add,list,disable,enable}"
        )
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
        client_add.add_argument(
            "--rate",
            default="",
            metavar="RATE",
            help="calls allowed per second, minute, hour or day, e.g. 600/m "
            "(default: the site's RATE setting)",
        )
        client_add.add_argument(
            "--allow-pickle",
            action="store_true",
            help="let it send and receive pickle (allow-listed types only), "
            "where the site's ALLOW_PICKLE setting is on",
        )
        client_actions.add_parser("list", parents=base, help="list client applications")
        for verb, what in (("disable", "refuse all its keys"), ("enable", "accept its keys again")):
            switch = client_actions.add_parser(
                verb, parents=base, help=f"{what} from the next call on"
            )
            switch.add_argument("name", metavar="NAME")

        key = resources.add_parser("key", parents=base, help="API keys")
        key_actions = key.add_subparsers(
            dest="action", required=True, metavar="{create,list,revoke,rotate}"
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
        key_create.add_argument(
            "--public-key",
            dest="public_key",
            metavar="FILE_OR_VALUE",
            help="register a signing key: the ed25519 public key (as servicewire keygen "
            "prints it) or a file holding it; the key id is printed last",
        )
        key_actions.add_parser("list", parents=base, help="list keys (never their secrets)")
        key_revoke = key_actions.add_parser(
            "revoke", parents=base, help="revoke a key from the next call on"
        )
        key_revoke.add_argument("key_id", metavar="KEY_ID")
        key_rotate = key_actions.add_parser(
            "rotate",
            parents=base,
            help="issue a successor to a bearer key; the old one ends after a grace period",
        )
        key_rotate.add_argument("key_id", metavar="KEY_ID")
        key_rotate.add_argument(
            "--grace",
            default=DEFAULT_GRACE,
            metavar="DURATION",
            help=f"how long the old key keeps working, e.g. 1h or 0s (default {DEFAULT_GRACE})",
        )
        key_rotate.add_argument(
            "--expires-in",
            dest="expires_in",
            metavar="DURATION",
            help="the new key's lifetime (default: never expires)",
        )
        audit_command.add_arguments(resources, base)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the chosen sub-command."""
        action = f"{options['resource']} {options['action']}"
        if action == "client add":
            self.client_add(
                options["name"],
                options["scopes"],
                options["rate"],
                allow_pickle=options.get("allow_pickle", False),
            )
        elif action == "client list":
            self.client_list()
        elif action == "key create":
            self.key_create(options["name"], options["expires_in"], options.get("public_key"))
        elif action == "key list":
            self.key_list()
        elif action in ("client disable", "client enable"):
            self.client_switch(options["name"], active=options["action"] == "enable")
        elif action == "key rotate":
            self.key_rotate(options["key_id"], options["grace"], options["expires_in"])
        elif options["resource"] == "audit":
            audit_command.handle(self, options)
        else:
            self.key_revoke(options["key_id"])

    def client_add(
        self, name: str, scopes: Sequence[str], rate: str = "", *, allow_pickle: bool = False
    ) -> None:
        """Create a client application with the given scope labels and rate
        (and permission to use pickle, with ``allow_pickle``)."""
        name = name.strip()
        if not name:
            raise CommandError("The client name must not be empty.")
        if len(name) > _NAME_MAX_LENGTH:
            raise CommandError(f"The client name is longer than {_NAME_MAX_LENGTH} characters.")
        try:
            labels = clean_scopes(scopes)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        rate = rate.strip()
        if rate:
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise CommandError(f"--rate: {exc}") from None
        if ClientApp.objects.filter(name=name).exists():
            raise CommandError(f"A client named {name!r} already exists.")
        try:
            # The savepoint keeps a concurrent duplicate from poisoning an
            # outer transaction (call_command inside a test or a script).
            with transaction.atomic():
                ClientApp.objects.create(
                    name=name, scopes=labels, rate=rate, allow_pickle=allow_pickle
                )
        except IntegrityError:
            raise CommandError(f"A client named {name!r} already exists.") from None
        granted = ", ".join(labels) if labels else "none"
        limit = f"rate: {rate}" if rate else "rate: the site's default"
        self.stdout.write(f"Created client {name!r} (scopes: {granted}; {limit}).")
        if allow_pickle:
            site = "on" if get_settings().ALLOW_PICKLE else "off, so it cannot use pickle yet"
            self.stdout.write(
                f"It may use pickle where the site allows it (ALLOW_PICKLE is {site})."
            )
        self.stdout.write(f"Create its first key with: manage.py servicewire key create {name}")

    def client_list(self) -> None:
        """Print every client with its state, scopes and number of keys."""
        clients = ClientApp.objects.annotate(key_count=Count("keys")).order_by("name")
        rows = [
            (
                client.name,
                "yes" if client.is_active else "no",
                ", ".join(sorted(client.scope_set)) or "-",
                str(getattr(client, "key_count", 0)),
            )
            for client in clients
        ]
        if not rows:
            self.stdout.write("No client applications.")
            return
        self._table(("NAME", "ACTIVE", "SCOPES", "KEYS"), rows)

    def client_switch(self, name: str, *, active: bool) -> None:
        """Disable or enable a client: all its keys at once, from the next call on."""
        changed = ClientApp.objects.filter(name=name).exclude(is_active=active)
        if changed.update(is_active=active):
            if active:
                self.stdout.write(f"Enabled client {name!r}: its usable keys work again.")
            else:
                self.stdout.write(
                    f"Disabled client {name!r}: all its keys are refused from the next call."
                )
            return
        if not ClientApp.objects.filter(name=name).exists():
            raise CommandError(f"No client named {name!r}.")
        self.stdout.write(f"Client {name!r} was already {'enabled' if active else 'disabled'}.")

    def key_create(self, name: str, expires_in: str | None, public_key: str | None = None) -> None:
        """Issue a key for the named client and print it once, on the last line.

        With ``public_key``, register a signing key instead and print its id last.
        """
        client = ClientApp.objects.filter(name=name).first()
        if client is None:
            raise CommandError(
                f"No client named {name!r}. Add it with: manage.py servicewire client add {name}"
            )
        lifetime = _key_lifetime(expires_in)
        expires = timezone.now() + lifetime if lifetime is not None else None
        until = f"expires {_when(expires)}" if expires else "never expires"
        if public_key is not None:
            self._register_public_key(client, public_key, expires, until)
            return
        key, plain = issue_key(client, expires=expires)
        if not client.is_active:
            self.stderr.write(f"Client {name!r} is disabled: its keys are refused until enabled.")
        self.stdout.write(
            f"Key {key.key_id} for client {client.name}, {until}; shown once, store it now:"
        )
        self.stdout.write(plain)

    def _register_public_key(
        self, client: ClientApp, given: str, expires: datetime | None, until: str
    ) -> None:
        from servicewire.signatures import register_public_key

        path = Path(given).expanduser()
        try:
            # A short value is tried as a path first; a key file is small.
            text = (
                path.read_text("utf-8")[: 64 * 1024]
                if len(given) < 4096 and path.is_file()
                else given
            )
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"--public-key: cannot read {given!r}: {exc}") from None
        try:
            key = register_public_key(client, text, expires=expires)
        except ValueError as exc:
            raise CommandError(f"--public-key: {exc}") from None
        if not client.is_active:
            self.stderr.write(
                f"Client {client.name!r} is disabled: its keys are refused until enabled."
            )
        self.stdout.write(
            f"Signing key for client {client.name}, {until}; the site holds only its public "
            "key. The client signs with its private key and this key id:"
        )
        self.stdout.write(key.key_id)

    def key_list(self) -> None:
        """Print every key's id, client, dates and state; never a secret or hash."""
        keys = ApiKey.objects.select_related("client").order_by("client__name", "-created")
        rows = [
            (
                key.key_id,
                key.client.name,
                "ed25519" if key.public_key else "bearer",
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
        self._table(("KEY ID", "CLIENT", "KIND", "CREATED", "EXPIRES", "LAST USED", "STATE"), rows)

    def key_revoke(self, given: str) -> None:
        """Revoke a key; the next call that presents it is refused."""
        key_id = _key_id(given)
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

    def key_rotate(self, given: str, grace_text: str, expires_in: str | None) -> None:
        """Issue a successor to a bearer key; the old key ends after the grace.

        The old key's expiry becomes the earlier of its own and now + grace,
        and its ``replaced_by`` names the new key. The new key is printed
        alone on the last line.
        """
        key_id = _key_id(given)
        try:
            grace = parse_duration(grace_text)
        except ValueError as exc:
            raise CommandError(f"--grace: {exc}") from None
        lifetime = _key_lifetime(expires_in)
        with transaction.atomic():
            # Locked, so that two rotations at once cannot both issue a successor.
            key = (
                ApiKey.objects.select_for_update()
                .select_related("client")
                .filter(key_id=key_id)
                .first()
            )
            if key is None:
                raise CommandError(f"No API key with id {key_id!r}.")
            self._check_rotatable(key)
            now = timezone.now()
            expires = now + lifetime if lifetime else None
            new_key, plain = issue_key(key.client, expires=expires)
            key.replaced_by = new_key
            key.expires = min(key.expires, now + grace) if key.expires else now + grace
            key.save(update_fields=["replaced_by", "expires"])
        if not key.client.is_active:
            self.stderr.write(
                f"Client {key.client.name!r} is disabled: its keys are refused until enabled."
            )
        ends = "now" if key.expires <= now else f"at {_when(key.expires)}"
        self.stdout.write(
            f"Rotated key {key_id} of client {key.client.name}: it stops working {ends}."
        )
        until = f"expires {_when(expires)}" if expires else "never expires"
        self.stdout.write(
            f"New key {new_key.key_id}, {until}; shown once, store it now "
            "and move the client to it before the old one stops:"
        )
        self.stdout.write(plain)

    def _check_rotatable(self, key: ApiKey) -> None:
        if key.public_key:
            raise CommandError(
                f"Key {key.key_id} is a signing key: the site never holds its private key, "
                "so it cannot make its successor. Have the client make a new key pair "
                "(servicewire keygen PATH), register it with: manage.py servicewire key "
                f"create {key.client.name} --public-key FILE, then revoke {key.key_id}."
            )
        if key.revoked is not None:
            raise CommandError(
                f"Key {key.key_id} is revoked; issue a new one with: "
                f"manage.py servicewire key create {key.client.name}"
            )
        if key.expires is not None and key.expires <= timezone.now():
            raise CommandError(
                f"Key {key.key_id} has expired; issue a new one with: "
                f"manage.py servicewire key create {key.client.name}"
            )
        if key.replaced_by_id is not None:
            successor = ApiKey.objects.filter(pk=key.replaced_by_id).values_list(
                "key_id", flat=True
            )
            raise CommandError(
                f"Key {key.key_id} was already rotated (to {successor.first() or 'a deleted key'});"
                " rotate that key instead."
            )

    def _table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write(line.rstrip())


def _key_id(given: str) -> str:
    """The key id in ``given``: an id, or a whole key pasted by mistake (never echoed)."""
    whole = _WHOLE_KEY_RE.fullmatch(given.strip())
    key_id = whole["key_id"] if whole else given.strip()
    if not _KEY_ID_RE.fullmatch(key_id):
        # Something pasted by mistake may be a secret: echo only what cannot be.
        shown = "(not shown: it may be a secret)" if looks_secret(key_id) else repr(key_id[:40])
        raise CommandError(
            f"Not a key id: {shown} (ids are {KEY_ID_LENGTH} letters and digits; "
            "see: manage.py servicewire key list)"
        )
    return key_id


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


def _key_lifetime(expires_in: str | None) -> timedelta | None:
    """``--expires-in`` read as a lifetime; None when the key never expires."""
    if expires_in is None:
        return None
    try:
        lifetime = parse_duration(expires_in)
    except ValueError as exc:
        raise CommandError(f"--expires-in: {exc}") from None
    if not lifetime:
        raise CommandError("--expires-in: a key must live longer than 0 seconds.")
    return lifetime


def _when(moment: datetime | None, *, none: str = "-") -> str:
    if moment is None:
        return none
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()
