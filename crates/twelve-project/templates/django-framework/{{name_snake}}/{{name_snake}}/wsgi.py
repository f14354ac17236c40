"""WSGI entry point of the {{name}} Django project (used by gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{name_snake}}.settings")

application = get_wsgi_application()
