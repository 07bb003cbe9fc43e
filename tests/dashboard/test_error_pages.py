"""Error pages use the site's layout with a way back; an htmx request after the session expired
sends the whole page to the sign-in page; the favicon exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import path

from dashboard.pages.errors import PLAIN, server_error


def boom(request):
    raise RuntimeError("a bug")


# This module is also a URL conf (for the server error test).
urlpatterns = [path("boom/", boom)]
handler500 = "dashboard.pages.errors.server_error"


def test_a_missing_page_uses_the_layout_with_a_way_back(signed_in):
    response = signed_in.get("/batches/999999/")
    html = response.content.decode()
    assert response.status_code == 404 and 'class="brand"' in html and "Back to the batches" in html
    assert 'rel="icon"' in html and "Not found" in html


def test_a_stranger_meets_the_same_404(client, db):
    html = client.get("/no/such/page/").content.decode()
    assert "Not found" in html and "Back to the batches" in html


def test_a_refusal_uses_the_layout(client, viewer, reviewed):
    client.force_login(viewer)
    response = client.post(f"/batches/{reviewed.id}/retry-failed/")
    html = response.content.decode()
    assert response.status_code == 403 and 'class="brand"' in html and "Back to the batches" in html
    assert "You need the permission to launch batches" in html


@pytest.mark.urls(__name__)
def test_a_server_error_uses_the_layout(member):
    client = Client(raise_request_exception=False)
    client.force_login(member)
    response = client.get("/boom/")
    html = response.content.decode()
    assert response.status_code == 500 and 'class="brand"' in html and "Something went wrong" in html
    assert 'href="/"' in html and "a bug" not in html


def test_the_server_error_page_needs_neither_request_nor_database(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = server_error(None)
    assert response.status_code == 500 and "Something went wrong" in response.content.decode()


def test_the_server_error_page_falls_back_to_plain_html():
    response = server_error(None, template_name="no-such-template.html")
    assert response.status_code == 500 and response.content.decode() == PLAIN


def test_an_htmx_request_after_the_session_expired_redirects_the_whole_page(client, db, reviewed):
    headers = {"HX-Request": "true", "HX-Current-URL": f"http://testserver/batches/{reviewed.id}/result/?severity=high"}
    response = client.get(f"/batches/{reviewed.id}/result/?sort=file", headers=headers)
    assert response.status_code == 200 and response.content == b""
    assert response["HX-Redirect"] == f"/login/?next=%2Fbatches%2F{reviewed.id}%2Fresult%2F%3Fseverity%3Dhigh"
    response = client.post(f"/batches/{reviewed.id}/retry-failed/", headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == f"/login/?next=%2Fbatches%2F{reviewed.id}%2Fretry-failed%2F"
    # Another site's address in HX-Current-URL: only its path is kept, on this site.
    headers = {"HX-Request": "true", "HX-Current-URL": "https://evil.example/phish"}
    response = client.get("/escalations/", headers=headers)
    assert response["HX-Redirect"] == "/login/?next=%2Fphish"
    # Without htmx: the usual redirect.
    response = client.get("/escalations/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/escalations/"


def test_the_favicon_is_linked_and_served(signed_in):
    html = signed_in.get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
    found = finders.find("favicon.svg")
    assert found and Path(found).read_text().startswith("<svg")
    assert signed_in.get("/static/favicon.svg").status_code == 200


def test_a_form_without_its_token_gets_the_403_page_saying_what_to_do(member, reviewed):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    response = client.post(f"/batches/{reviewed.id}/reviews/", {"decision": "approve"})
    html = response.content.decode()
    assert response.status_code == 403 and 'class="brand"' in html
    assert "This form has expired or came from another site: reload the page and try again" in html
