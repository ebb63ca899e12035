from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from aistack.accounts.throttling import login_throttled
from aistack.api import api, api_not_found
from aistack.usage import views as usage_views
from aistack.web import health, metrics
from aistack.web.urls import LOGIN_PAGE

urlpatterns = [
    path("", include("aistack.web.urls")),
    path("", include("aistack.chat.urls")),
    path("healthz", health.healthz, name="healthz"),
    # Asked for by browsers (and the admin's pages, which do not name the icon).
    path("favicon.ico", RedirectView.as_view(url=static("web/favicon.svg"), permanent=True)),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("usage/", usage_views.usage_page, name="usage"),
    # Before the admin's own routes: its log-in obeys the site's throttle, and a throttled
    # try gets the site's log-in page (which returns to the admin once signed in).
    path("admin/login/", login_throttled(admin.site.login, template_name=LOGIN_PAGE)),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/(?P<path>.*)$", api_not_found),
]

handler403 = "aistack.web.errors.permission_denied"
handler404 = "aistack.web.errors.page_not_found"
handler500 = "aistack.web.errors.server_error"
