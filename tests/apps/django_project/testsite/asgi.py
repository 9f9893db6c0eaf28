"""ASGI entry point of the test project, as `django-admin startproject` writes it: Django has no
lifespan support (the server must serve it anyway, as uvicorn's `auto` mode does)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")

application = get_asgi_application()
