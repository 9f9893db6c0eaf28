from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("info", views.info, name="info"),
    path("form", views.form, name="form"),
    path("upload", views.upload, name="upload"),
    path("stream", views.stream, name="stream"),
    path("db", views.db, name="db"),
    path("error", views.error, name="error"),
]
