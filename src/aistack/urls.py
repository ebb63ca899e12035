from django.contrib import admin
from django.urls import path, re_path

from aistack.api import api, api_not_found
from aistack.web import views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("documents/<int:document_id>/", views.document_page, name="document"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/(?P<path>.*)$", api_not_found),
]
