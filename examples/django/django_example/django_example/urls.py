"""URL configuration of the django-example project."""

from django.contrib import admin
from django.urls import path

from visits import views

urlpatterns = [
    path("", views.index, name="index"),
    path("env", views.env, name="env"),
    path("health", views.health, name="health"),
    path("visits", views.visits, name="visits"),
    path("admin/", admin.site.urls),
]
