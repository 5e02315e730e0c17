"""The demo site's process: ``python -m servicewire.demo.serve --port 0``.

Run by :mod:`servicewire.demo.run` with ``DJANGO_SETTINGS_MODULE`` and
``SERVICEWIRE_DEMO_DIR`` set. It creates the database, a client ``demo`` with
the ``science`` scope and a key for it, then serves on 127.0.0.1 with the
threaded server that ``runserver`` uses (without autoreload). Its stdout
carries exactly one line, JSON ``{"url": ..., "key": ..., "pid": ...}``, to
the parent: the plain key is written nowhere else.

It stops when its stdin reaches end of file, which happens when the parent
closes it or dies, so that the server never outlives the demo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence

import django
from django.core.management import call_command
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application

HOST = "127.0.0.1"  # loopback only: the demo settings allow plain HTTP because of it


def main(argv: Sequence[str] | None = None) -> int:
    """Set up the site, report the URL and key on stdout, serve until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m servicewire.demo.serve")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    options = parser.parse_args(argv)

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)

    # Models can be imported only once Django is set up.
    from servicewire.auth import issue_key
    from servicewire.models import ClientApp

    client = ClientApp.objects.create(name="demo", scopes=["science"])
    _, key = issue_key(client)

    server = ThreadedWSGIServer((HOST, options.port), WSGIRequestHandler, ipv6=False)
    server.set_app(get_wsgi_application())
    port = server.server_address[1]
    threading.Thread(target=_stop_at_end_of_stdin, args=(server,), daemon=True).start()

    sys.stdout.write(
        json.dumps({"url": f"http://{HOST}:{port}/services/", "key": key, "pid": os.getpid()})
        + "\n"
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _stop_at_end_of_stdin(server: ThreadedWSGIServer) -> None:
    # The parent never writes to our stdin; the read returns only when the
    # parent closes the pipe, or exits however it exits (even by SIGKILL).
    sys.stdin.buffer.read()
    server.shutdown()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the whole process group; the parent
        # reports it, so the server just leaves without a traceback.
        sys.exit(130)
