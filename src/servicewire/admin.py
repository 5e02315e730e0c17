"""The Django admin for client applications and their API keys.

A key is issued from "Add API key": the admin picks a client and an optional
expiry, and the next page shows the new key once. It is rendered straight
into that response and kept nowhere, not in the session, not in a message
cookie, so it cannot be shown again. ``secret_hash`` appears on no page.
After issue, only a key's expiry can change; "Revoke selected keys" revokes.
The audit trail is read-only for everyone, superusers included: entries are
pruned with ``manage.py servicewire audit prune``, never edited or deleted here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html

from servicewire.auth import issue_key
from servicewire.models import ApiKey, AuditEntry, ClientApp, clean_scopes
from servicewire.throttle import parse_rate

if TYPE_CHECKING:
    ClientAppModelForm = forms.ModelForm[ClientApp]
    ApiKeyModelForm = forms.ModelForm[ApiKey]
    ApiKeyTabularInline = admin.TabularInline[ApiKey, ClientApp]
    ClientAppModelAdmin = admin.ModelAdmin[ClientApp]
    ApiKeyModelAdmin = admin.ModelAdmin[ApiKey]
    AuditEntryModelAdmin = admin.ModelAdmin[AuditEntry]
else:
    # The stubs make these classes generic; Django's own are not subscriptable
    # at run time without django-stubs-ext, which is only a development tool.
    ClientAppModelForm = ApiKeyModelForm = forms.ModelForm
    ApiKeyTabularInline = admin.TabularInline
    ClientAppModelAdmin = ApiKeyModelAdmin = AuditEntryModelAdmin = admin.ModelAdmin

_SCOPE_SEPARATORS = re.compile(r"[\s,]+")

# The plain key from issue to the response that shows it, keyed by request so
# it dies with the request and never reaches any storage.
_issued: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


class ClientAppForm(ClientAppModelForm):
    """A client, with its scopes edited as a list of labels rather than JSON."""

    scopes = forms.CharField(
        required=False,
        help_text="Labels separated by commas or spaces: lower-case letters, digits, "
        "and _ . : -. A service that declares scopes needs one of them.",
    )

    class Meta:
        model = ClientApp
        fields = ["name", "is_active", "scopes", "rate", "allow_pickle", "user", "notes"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["scopes"] = ", ".join(sorted(self.instance.scope_set))

    def clean_scopes(self) -> list[str]:
        """The labels as a list without repeats; refuses malformed labels."""
        text: str = self.cleaned_data["scopes"]
        return clean_scopes(label for label in _SCOPE_SEPARATORS.split(text.strip()) if label)

    def clean_rate(self) -> str:
        """A rate such as 600/m, or empty for the site's default."""
        text: str = self.cleaned_data["rate"].strip()
        if text:
            try:
                parse_rate(text)
            except ValueError as exc:
                raise forms.ValidationError(str(exc), code="invalid_rate") from None
        return text


class ApiKeyInline(ApiKeyTabularInline):
    """A client's keys on its page, read-only; issue and revoke from the key admin."""

    model = ApiKey
    fields = readonly_fields = ("key_id", "created", "expires", "last_used", "state")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Keys are issued only through the key admin, which shows them once."""
        return False


@admin.register(ClientApp)
class ClientAppAdmin(ClientAppModelAdmin):
    """Client applications: their names, state, scopes and keys."""

    form = ClientAppForm
    list_display = [
        "name",
        "is_active",
        "scope_list",
        "rate",
        "allow_pickle",
        "key_count",
        "created",
    ]
    list_filter = ["is_active", "allow_pickle"]
    search_fields = ["name"]
    readonly_fields = ["created", "issue_key_link"]
    # A site may have many users: pick the linked one by id, not from a list.
    raw_id_fields = ["user"]
    inlines = [ApiKeyInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClientApp]:
        """Clients with their number of keys, counted in the same query."""
        return super().get_queryset(request).annotate(key_count=Count("keys"))

    @admin.display(description="scopes")
    def scope_list(self, client: ClientApp) -> str:
        """The scopes as a comma-separated list."""
        return ", ".join(sorted(client.scope_set))

    @admin.display(description="keys", ordering="key_count")
    def key_count(self, client: ClientApp) -> int:
        """How many keys the client has, in any state."""
        count: int = getattr(client, "key_count", 0)
        return count

    @admin.display(description="new key")
    def issue_key_link(self, client: ClientApp) -> str:
        """A link to issue a key for this client (after it is saved)."""
        if client.pk is None:
            return "Save the client first."
        url = reverse("admin:servicewire_apikey_add")
        return format_html('<a href="{}?client={}">Issue a new API key</a>', url, client.pk)


class IssueKeyForm(ApiKeyModelForm):
    """The choices made when issuing a key: its client and optional expiry."""

    class Meta:
        model = ApiKey
        fields = ["client", "expires"]
        help_texts = {"expires": "Leave empty for a key that does not expire."}

    def clean_expires(self) -> Any:
        """Refuse an expiry in the past: such a key would be dead on arrival."""
        expires = self.cleaned_data["expires"]
        if expires is not None and expires <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.", code="past")
        return expires


class StateFilter(admin.SimpleListFilter):
    """Filter keys by the state the list shows, in the same order of precedence."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        """The states a key can be in."""
        return [
            ("active", "active"),
            ("expired", "expired"),
            ("revoked", "revoked"),
            ("client disabled", "client disabled"),
        ]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Keys in the chosen state (all keys when none is chosen)."""
        now = timezone.now()
        unrevoked = Q(revoked__isnull=True)
        alive = unrevoked & (Q(expires__isnull=True) | Q(expires__gt=now))
        conditions = {
            "revoked": ~unrevoked,
            "expired": unrevoked & Q(expires__lte=now),
            "client disabled": alive & Q(client__is_active=False),
            "active": alive & Q(client__is_active=True),
        }
        chosen = conditions.get(self.value() or "")
        return queryset if chosen is None else queryset.filter(chosen)


@admin.register(ApiKey)
class ApiKeyAdmin(ApiKeyModelAdmin):
    """API keys: issued here and shown once, then listed, re-dated or revoked."""

    list_display = ["key_id", "client", "created", "expires", "last_used", "state"]
    list_filter = ["client", StateFilter]
    list_select_related = ["client"]
    search_fields = ["key_id", "client__name"]
    date_hierarchy = "created"
    actions = ["revoke_keys"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        """On issue, the client and expiry; afterwards the key's record."""
        if obj is None:
            return ("client", "expires")
        return ("key_id", "client", "state", "created", "expires", "last_used", "revoked")

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiKey | None = None
    ) -> tuple[str, ...]:
        """Everything but the expiry is fixed once a key exists."""
        if obj is None:
            return ()
        return ("key_id", "client", "state", "created", "last_used", "revoked")

    def get_form(
        self, request: Any, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        """The issue form for a new key, the ordinary model form otherwise."""
        if obj is None:
            kwargs["form"] = IssueKeyForm
        return super().get_form(request, obj, change, **kwargs)

    def save_form(self, request: Any, form: Any, change: Any) -> Any:
        """Issue a new key through :func:`issue_key`, the one place a secret is made."""
        if change:
            return super().save_form(request, form, change)
        key, plain = issue_key(form.cleaned_data["client"], expires=form.cleaned_data["expires"])
        _issued[request] = plain
        return key

    def save_model(self, request: Any, obj: ApiKey, form: Any, change: Any) -> None:
        """Save a changed expiry; a new key was already saved by :func:`issue_key`."""
        if change:
            super().save_model(request, obj, form, change)

    def save_related(self, request: Any, form: Any, formsets: Any, change: Any) -> None:
        """Nothing relates to a new key; a changed one saves as usual."""
        if change:
            super().save_related(request, form, formsets, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Show the new key, this once, instead of redirecting."""
        plain = _issued.pop(request, None)
        if plain is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key issued",
            "key": obj,
            "plain_key": plain,
        }
        response = TemplateResponse(request, "admin/servicewire/apikey/issued.html", context)
        # Neither the browser nor a proxy may keep the page that holds the key.
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        """Revoke the chosen keys; each is refused from its next call on."""
        revoked = queryset.filter(revoked__isnull=True).update(revoked=timezone.now())
        already = queryset.count() - revoked
        if revoked:
            self.message_user(
                request,
                f"Revoked {revoked} key(s); they are refused from the next call.",
                messages.SUCCESS,
            )
        if already:
            self.message_user(request, f"{already} key(s) were already revoked.", messages.INFO)


@admin.register(AuditEntry)
class AuditEntryAdmin(AuditEntryModelAdmin):
    """The audit trail, to read: nobody adds, changes or deletes entries here.

    Deleting is left to ``manage.py servicewire audit prune``, so that an
    admin account taken over cannot erase the trail of what it did.
    """

    list_display = [
        "time",
        "client_name",
        "key_id",
        "credential",
        "service",
        "status",
        "error_type",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "remote_addr",
        "request_id",
    ]
    list_filter = ["status", "client", "service", "credential", "error_type"]
    # ``=``: exact matches, which the indexes and a pasted request id need.
    search_fields = ["=request_id", "=key_id", "=client_name", "=remote_addr"]
    date_hierarchy = "time"
    # Counting a trail of millions of rows on every page would be slow.
    show_full_result_count = False
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Entries are written by requests only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        """Entries are never edited; the change page shows them read-only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        """Entries are pruned by the management command, not deleted here."""
        return False
