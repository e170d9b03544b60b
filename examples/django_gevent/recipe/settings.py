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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _dsn.get("dbname", "postgres"),
        "USER": _dsn.get("user", ""),
        "PASSWORD": _dsn.get("password", ""),
        "HOST": _dsn.get("host", ""),
        "PORT": _dsn.get("port", ""),
        # Under gevent every request is a greenlet, and Django keeps one connection per
        # greenlet: 0 closes it when the request ends. See the recipe's README.
        "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "0")),
        "OPTIONS": {"application_name": APP_NAME},
    }
}
