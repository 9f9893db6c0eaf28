"""Settings of the minimal Django project used by the end-to-end tests.

The database is sqlite in the test state directory ($RWSGI_TEST_STATE_DIR), created on demand;
no migrations are needed (the one view that uses it makes its own table).
"""

import os
import tempfile
from pathlib import Path

STATE_DIR = Path(os.environ.get("RWSGI_TEST_STATE_DIR") or Path(tempfile.gettempdir()) / "rwsgi-test-state")

SECRET_KEY = "rwsgi-test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "testsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [Path(__file__).resolve().parent / "templates"],
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]
WSGI_APPLICATION = "testsite.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": STATE_DIR / "django.sqlite3"}}
USE_TZ = True
FILE_UPLOAD_TEMP_DIR = None  # system temp dir; uploads over 2.5 MB go to a temp file
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024
LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "ERROR"}},
}
