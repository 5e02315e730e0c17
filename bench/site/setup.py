"""Prepare the bench database: migrate, create a client app, print a new key.

Run as ``python -m bench.site.setup`` in the environment the servers use; the
plain key is the one line printed, for the bench's servicewire client only.
"""

from __future__ import annotations

import os

import django


def main() -> None:
    """Migrate the database and print a fresh key of the client ``bench``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site.settings")
    django.setup()
    from django.core.management import call_command

    from servicewire.auth import issue_key
    from servicewire.models import ClientApp

    call_command("migrate", verbosity=0, interactive=False)
    client, _ = ClientApp.objects.get_or_create(name="bench")
    _, plain = issue_key(client)
    print(plain)


if __name__ == "__main__":
    main()
