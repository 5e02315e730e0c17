"""Prepare the bench database: migrate, create a client app and its credentials.

Run as ``python -m bench.site.setup`` in the environment the servers use. It
writes an ed25519 private key to ``$BENCH_SIGNING_KEY`` and registers its
public half, then prints the signing key's id and, on the last line, a fresh
bearer key: both for the bench's servicewire clients only.
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
    from servicewire.signatures import register_public_key
    from servicewire.signing import generate_private_key, public_key_text, write_private_key

    call_command("migrate", verbosity=0, interactive=False)
    client, _ = ClientApp.objects.get_or_create(name="bench")
    private = generate_private_key()
    write_private_key(os.environ["BENCH_SIGNING_KEY"], private)
    print(register_public_key(client, public_key_text(private)).key_id)
    _, plain = issue_key(client)
    print(plain)


if __name__ == "__main__":
    main()
