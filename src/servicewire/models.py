"""The calling applications and their API keys.

A :class:`ClientApp` is a program allowed to call the site's services (named so
to keep it apart from the HTTP :class:`servicewire.Client`). It holds API keys
(:class:`ApiKey`); the site stores only a keyed hash of each key's secret, so
a database leak yields no usable credential. Keys are issued by
:func:`servicewire.auth.issue_key`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

SCOPE_RE = re.compile(r"[a-z0-9_.:-]+")


def clean_scopes(labels: Iterable[str]) -> list[str]:
    """Scope labels checked and without repeats, in their order.

    Raises ValidationError naming the first label that is not ``[a-z0-9_.:-]+``.
    """
    cleaned: list[str] = []
    for label in labels:
        if not SCOPE_RE.fullmatch(label):
            raise ValidationError(
                "Invalid scope %(label)s: use lower-case letters, digits and _ . : -",
                params={"label": label},
                code="invalid_scope",
            )
        if label not in cleaned:
            cleaned.append(label)
    return cleaned


class ClientApp(models.Model):
    """A program allowed to call services: a desktop tool, a script, a server."""

    name = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(
        default=True, help_text="An inactive client's keys are all refused."
    )
    scopes = models.JSONField(
        default=list,
        blank=True,
        help_text="Labels granted to this client; a service that declares scopes "
        "needs one of them.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    notes = models.TextField(blank=True)

    class Meta:
        verbose_name = "client application"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def scope_set(self) -> frozenset[str]:
        """The granted scopes as a set, whatever was stored."""
        scopes: Any = self.scopes
        return frozenset(str(s) for s in scopes) if isinstance(scopes, list) else frozenset()


class ApiKey(models.Model):
    """One credential of a client: ``sw_<key_id>_<secret>``, stored as a hash.

    ``key_id`` is public (it names the key in lists, logs and the audit
    trail); only ``secret_hash`` proves possession of the secret.
    """

    client = models.ForeignKey(ClientApp, on_delete=models.CASCADE, related_name="keys")
    key_id = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=128, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True, editable=False)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.key_id} ({self.client.name})"

    def is_usable(self, now: Any = None) -> bool:
        """Whether the key may authenticate a request right now."""
        now = now or timezone.now()
        return (
            self.revoked is None
            and (self.expires is None or self.expires > now)
            and self.client.is_active
        )

    @property
    def state(self) -> str:
        """``active``, ``revoked``, ``expired`` or ``client disabled``, for people."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= timezone.now():
            return "expired"
        if not self.client.is_active:
            return "client disabled"
        return "active"
