"""The server error page: rendered from the template alone (no request context, no database), and a
plain page if even that fails."""

from __future__ import annotations

from django.http import HttpResponseServerError
from django.template import loader

PLAIN = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Server error · Spawner</title></head>'
    '<body><h1>Something went wrong</h1><p>The error is logged. <a href="/">Back to the batches</a></p></body></html>'
)


def server_error(request, template_name: str = "500.html"):
    try:
        body = loader.get_template(template_name).render({})
    except Exception:  # the page that says something failed must not fail itself
        body = PLAIN
    return HttpResponseServerError(body)


def csrf_failure(request, reason: str = ""):
    """A form sent without its token (an old tab, another site): the 403 page, in the site's layout."""
    from django.shortcuts import render

    message = "this form has expired or came from another site: reload the page and try again"
    return render(request, "403.html", {"message": message}, status=403)
