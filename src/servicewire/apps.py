"""The Django app: finds every installed app's ``services`` module at start-up."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ServicewireConfig(AppConfig):
    name = "servicewire"
    verbose_name = "servicewire"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from servicewire import checks  # noqa: F401  (registers the system checks)

        # Like admin.py: importing each app's services.py runs its @service
        # decorators, so a duplicate name fails start-up, not the first call.
        autodiscover_modules("services")
