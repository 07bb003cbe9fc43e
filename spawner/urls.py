from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("dashboard.urls")),
    path("", include("dashboard.api.urls")),
]

# The error pages use the site's layout; a server error renders without the request's context.
handler500 = "dashboard.pages.errors.server_error"
