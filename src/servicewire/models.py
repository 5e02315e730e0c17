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

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from servicewire import keycache

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


class ClientAppQuerySet(models.QuerySet["ClientApp"]):
    """Bulk changes of clients forget their keys' cached state (see keycache)."""

    def update(self, **kwargs: Any) -> int:
        key_ids = list(ApiKey.objects.filter(client__in=self).values_list("key_id", flat=True))
        changed = super().update(**kwargs)
        keycache.forget_keys(key_ids)
        return changed

    def delete(self) -> tuple[int, dict[str, int]]:
        key_ids = list(ApiKey.objects.filter(client__in=self).values_list("key_id", flat=True))
        deleted = super().delete()
        keycache.forget_keys(key_ids)
        return deleted


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    """Bulk changes of keys forget their cached state (see keycache)."""

    def record_use(self, when: Any) -> int:
        """Set ``last_used``: no part of a key's authority, so nothing to forget."""
        return super().update(last_used=when)

    def update(self, **kwargs: Any) -> int:
        key_ids = list(self.values_list("key_id", flat=True))
        changed = super().update(**kwargs)
        keycache.forget_keys(key_ids)
        return changed

    def delete(self) -> tuple[int, dict[str, int]]:
        key_ids = list(self.values_list("key_id", flat=True))
        deleted = super().delete()
        keycache.forget_keys(key_ids)
        return deleted


class ClientApp(models.Model):
    """A program allowed to call services: a desktop tool, a script, a server."""

    objects = ClientAppQuerySet.as_manager()

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
    allow_pickle = models.BooleanField(
        default=False,
        help_text="May send and receive pickle, where the site allows it at all "
        "(ALLOW_PICKLE). Even then only allow-listed types are unpickled.",
    )
    rate = models.CharField(
        max_length=20,
        blank=True,
        help_text="Rate limit such as 600/m; empty for the site's default.",
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="servicewire_client",
        help_text="The site user whose browser calls count as this client.",
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

    objects = ApiKeyQuerySet.as_manager()

    client = models.ForeignKey(ClientApp, on_delete=models.CASCADE, related_name="keys")
    key_id = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=128, blank=True, editable=False)
    public_key = models.TextField(
        blank=True,
        editable=False,
        help_text="For a signing key: the ed25519 public key (the site never holds "
        "the private key). Empty for a bearer key.",
    )
    replaced_by = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The key issued when this one was rotated.",
    )
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


class AuditEntry(models.Model):
    """One request to the mount, allowed or refused. Holds no secret.

    ``client_name`` and ``key_id`` are copied, not only linked, so that the
    trail still says who called after a client or key is deleted.
    """

    time = models.DateTimeField(default=timezone.now, db_index=True)
    client = models.ForeignKey(
        ClientApp, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_name = models.CharField(max_length=100, blank=True)
    key_id = models.CharField(max_length=32, blank=True)
    credential = models.CharField(max_length=16, blank=True)
    service = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=100, blank=True)
    duration_ms = models.FloatField()
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    remote_addr = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        ordering = ["-time"]
        indexes = [
            models.Index(fields=["client_name", "time"]),
            models.Index(fields=["service", "time"]),
        ]

    def __str__(self) -> str:
        who = self.client_name or "anonymous"
        return f"{self.time:%Y-%m-%d %H:%M:%S} {who} {self.service or '-'} {self.status}"


@receiver([post_save, post_delete], sender=ApiKey)
def _forget_key(sender: type[ApiKey], instance: ApiKey, **kwargs: Any) -> None:
    keycache.forget_keys([instance.key_id])


@receiver([post_save, post_delete], sender=ClientApp)
def _forget_client_keys(sender: type[ClientApp], instance: ClientApp, **kwargs: Any) -> None:
    keycache.forget_keys(
        ApiKey.objects.filter(client_id=instance.pk).values_list("key_id", flat=True)
    )
