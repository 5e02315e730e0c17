"""ASGI entry point of the bench site, for uvicorn.

servicewire's handler (:mod:`servicewire.asgi`), as the docs tell a site to
use; ``BENCH_ASGI_HANDLER=django`` serves the site with Django's own
``get_asgi_application()`` instead, to measure what the handler changes.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site.settings")

if os.environ.get("BENCH_ASGI_HANDLER") == "django":
    from django.core.asgi import get_asgi_application
else:
    from servicewire.asgi import get_asgi_application

application = get_asgi_application()
