from __future__ import annotations

from django.urls import path

from recipe import views

urlpatterns = [
    path("sleep/", views.sleep),
    path("concurrent/", views.concurrent),
    path("connections/", views.connections_view),
]
