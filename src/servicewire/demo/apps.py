"""The demo as a Django app, so that autodiscovery finds its ``services`` module."""

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "servicewire.demo"
    # The default label would be "demo", a name a user's own app may well have.
    label = "servicewire_demo"
    verbose_name = "servicewire demo"
