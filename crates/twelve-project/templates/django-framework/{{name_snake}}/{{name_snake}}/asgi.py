"""ASGI entry point of the {{name}} Django project."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{name_snake}}.settings")

application = get_asgi_application()
