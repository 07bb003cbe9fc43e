from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico on pages without a link to one (the admin's, a JSON answer).
    path(
        "favicon.ico",
        login_not_required(RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
        name="favicon",
    ),
    path("", include("dashboard.urls")),
    path("", include("dashboard.api.urls")),
]

# The error pages use the site's layout; a server error renders without the request's context.
handler500 = "dashboard.pages.errors.server_error"
