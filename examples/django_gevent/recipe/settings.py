"""Django settings for the gevent recipe: just enough for views that query PostgreSQL."""

from __future__ import annotations

import os

import psycopg2.extensions

_dsn = psycopg2.extensions.parse_dsn(os.environ.get("DATABASE_DSN", "dbname=postgres"))

SECRET_KEY = "recipe-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "recipe.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True
APP_NAME = os.environ.get("RECIPE_APP_NAME", "psycogreen-recipe-django")

# RECIPE_POOL=N: connections come from psycogreen's pool (at most N), returned at the end of
# each request, instead of one new server connection per request.
POOL_SIZE = int(os.environ.get("RECIPE_POOL", "0"))
_options: dict[str, object] = {"application_name": APP_NAME}
if POOL_SIZE:
    _options["pool"] = {"min_size": min(2, POOL_SIZE), "max_size": POOL_SIZE, "timeout": 10}

DATABASES = {
    "default": {
        "ENGINE": "psycogreen.core.django" if POOL_SIZE else "django.db.backends.postgresql",
        "NAME": _dsn.get("dbname", "postgres"),
        "USER": _dsn.get("user", ""),
        "PASSWORD": _dsn.get("password", ""),
        "HOST": _dsn.get("host", ""),
        "PORT": _dsn.get("port", ""),
        # Under gevent every request is a greenlet, and Django keeps one connection per
        # greenlet: 0 closes it when the request ends. See the recipe's README.
        "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "0")),
        "OPTIONS": _options,
    }
}
