"""WSGI entry point of the test site, for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.production_settings")
application = get_wsgi_application()
