"""An htmx request whose session has expired gets the whole page sent to the sign-in page.

Without this, the login page's HTML (the answer to the redirect htmx followed) would be swapped
into the notice area or a table. The redirect to the login URL becomes `HX-Redirect`, with `next=`
the page the reader was on (htmx tells it in `HX-Current-URL`), not the fragment's address.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme


class HtmxLoginRedirect:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.headers.get("HX-Request") != "true" or response.status_code not in (301, 302, 303, 307, 308):
            return response
        login = resolve_url(settings.LOGIN_URL)
        location = urlsplit(response.get("Location", ""))
        if location.path != login:
            return response
        return self.to_login(request, login)

    @staticmethod
    def to_login(request, login: str) -> HttpResponse:
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        page = current.path + (f"?{current.query}" if current.query else "") if current.path else ""
        if not page or not url_has_allowed_host_and_scheme(page, allowed_hosts={request.get_host()}):
            page = request.get_full_path()
        answer = HttpResponse(status=200)
        answer["HX-Redirect"] = f"{login}?{urlencode({'next': page})}"
        return answer
