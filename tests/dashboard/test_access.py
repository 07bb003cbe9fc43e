"""Who may do what, for every URL and every websocket route, generated from the URL confs.

Five people: a stranger (not signed in), a viewer (signed in, no permission), a launcher
(add_batch), a reviewer (review_batch + resolve_escalation) and an admin (superuser). A URL or a
route this file cannot classify fails the test: a new page says here who may use it.
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from dashboard.live import relay
from dashboard.live.routing import websocket_urlpatterns
from spawner import services
from spawner.asgi import application
from spawner.models import Escalation, MergeStep, RunAttempt, Workspace
from tests.dashboard.conftest import grant
from tests.spawner.test_workspaces import git, make_repo

PEOPLE = ["stranger", "viewer", "launcher", "reviewer", "admin"]

# Pages any signed-in person may read (GET only).
READS = {
    "batch-list",
    "batch-new",
    "task-row",
    "batch",
    "batch-json",
    "compare",
    "batch-result",
    "batch-result-md",
    "batch-result-json",
    "escalations",
    "run",
    "run-log",
    "run-log-download",
    "merge-candidates",
    "run-diff",
    "run-diff-download",
    "stats",
    "stats-json",
    "tokens",
}
# Writes (POST only): what each needs, and a body that would succeed.
WRITES = {
    "batch-new": (
        "launch",
        {"action": "launch", "source": "yaml", "spec_text": "name: x\nagent: sh\ntasks: [{key: a}]"},
    ),
    "batch-cancel": ("cancel", {}),
    "batch-retry-failed": ("launch", {}),
    "batch-rerun": ("launch", {}),
    "run-cancel": ("cancel", {}),
    "run-retry": ("launch", {}),
    "batch-review": ("review", {"decision": "approve"}),
    "escalation-assign": ("resolve", {"assignee": ""}),
    "escalation-resolve": ("resolve", {"action": "accept"}),
    "merge-step": ("resolve", {"action": "skip"}),
    "merge-step-sides": ("resolve", {"side:README.md": "ours"}),
    "merge-reset": ("resolve", {}),
    "merge-pick": ("resolve", {}),
    # One's own API tokens (someone else's token is not one's to revoke: 409).
    "tokens": ("self", {"name": "ci", "scope": "read"}),
    "token-revoke": ("self", {}),
}
# What each person was granted; the admin may do everything.
GRANTED = {
    "stranger": set(),
    "viewer": {"self"},
    "launcher": {"self", "launch"},
    "reviewer": {"self", "review", "resolve"},
    "admin": {"self", "launch", "cancel", "review", "resolve"},
}
# Views that answer strangers: signing in and out (the site's and the admin's).
PUBLIC = {"login", "logout", "admin:login", "admin:logout"}
# Django's admin site checks staff itself.
ADMIN_SITE = "admin:"
# The REST API answers with problem details (401 without a token): tests/api/ checks each endpoint.
API = "api-1:"
# Websocket routes: the live pages (any signed-in person) and the fallback for unknown paths.
WS_LIVE = {"list", "batch", "compare", "result", "run", "escalations", "site"}


def walk(patterns, prefix="", namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{p.namespace}:" if p.namespace else namespace
            yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield namespace + (p.name or ""), prefix + str(p.pattern)


ALL_URLS = sorted(set(walk(get_resolver().url_patterns)))
DASHBOARD_URLS = [(name, route) for name, route in ALL_URLS if not name.startswith((ADMIN_SITE, API))]


def fill(route: str, ids: dict[str, int]) -> str:
    """A URL for a pattern, its parameters filled with existing objects (regex groups with a plausible value)."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in ids, f"no object to fill <{name}> in {route}: add one to the `objects` fixture"
        return str(ids[name])

    url = re.sub(r"<(?:\w+:)?(\w+)>", value, route)
    url = re.sub(r"\(\?P<\w+>[^)]*\)", "1", url)
    return "/" + url.lstrip("^").rstrip("$").replace("\\", "")


@pytest.fixture
def people(db, viewer, reviewer):
    from django.contrib.auth.models import User

    return {
        "stranger": None,
        "viewer": viewer,
        "launcher": grant(User.objects.create_user("lou", password="pw-lou-12345"), "add_batch"),
        "reviewer": reviewer,
        "admin": User.objects.create_superuser("ada", password="pw-ada-12345"),
    }


@pytest.fixture
def objects(reviewed, tmp_path, settings):
    """A finished batch with a failed P0 run (escalated), owned by someone none of the five is; its
    agents ran in worktrees of a real repository, and one run waits in the merge queue."""
    run = reviewed.runs.get(key="critical")
    log = tmp_path / "critical.log"
    log.write_bytes(b"the log\n")
    log.with_name("critical.diff").write_bytes(b"diff --git a/x b/x\n")  # the diff beside it (worktree runs)
    RunAttempt.objects.filter(run=run).update(log_path=str(log))
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "logs", "WORKSPACE_DIR": tmp_path / "ws"}
    repo = make_repo(tmp_path / "repo")
    checkpoint = git(repo, "rev-parse", "HEAD").strip()
    Workspace.objects.create(batch=reviewed, repo=str(repo), checkpoint=checkpoint, root=str(tmp_path / "ws" / "b"))
    step = MergeStep.objects.create(batch=reviewed, run=reviewed.runs.get(key="security"), position=0, state="queued")
    return {
        "batch_id": reviewed.id,
        "run_id": run.id,
        "number": run.attempt,
        "escalation_id": Escalation.objects.get(batch=reviewed).id,
        "step_id": step.id,
        "token_id": services.token_create(user=reviewed.owner, name="theirs", scope="read")[0].id,
    }


def client_for(person) -> Client:
    client = Client()
    if person is not None:
        client.force_login(person)
    return client


def test_every_dashboard_url_is_classified():
    unknown = [(name, route) for name, route in DASHBOARD_URLS if name not in READS | set(WRITES) | PUBLIC]
    assert not unknown, f"say who may use these URLs in READS or WRITES: {unknown}"


def test_the_url_conf_has_the_dashboard_pages():
    names = {name for name, _ in ALL_URLS}
    assert READS | set(WRITES) | PUBLIC <= names, "a classified URL no longer exists"


@pytest.mark.parametrize(("name", "route"), [u for u in DASHBOARD_URLS if u[0] in READS])
def test_reading_a_page(people, objects, name, route):
    url = fill(route, objects)
    for who in PEOPLE:
        client = client_for(people[who])
        response = client.get(url)
        if who == "stranger":
            assert response.status_code == 302 and response["Location"].startswith("/login/"), (url, response)
        else:
            assert response.status_code == 200, (who, url, response.status_code)
        if name not in WRITES:
            # A page that only reads takes no posts, from anyone.
            assert client.post(url).status_code == (302 if who == "stranger" else 405), (who, url)


@pytest.mark.parametrize(("name", "route"), [u for u in DASHBOARD_URLS if u[0] in WRITES])
def test_writing(people, objects, agent_types, name, route):
    """The refused first, so that what they would change is still there to change."""
    from spawner.models import RunEvent

    url = fill(route, objects)
    needs, body = WRITES[name]
    for who in sorted(PEOPLE, key=lambda who: needs in GRANTED[who]):
        client = client_for(people[who])
        events = RunEvent.objects.count()
        for headers in ({}, {"HX-Request": "true"}):
            response = client.post(url, body, headers=headers)
            if who == "stranger":
                assert response.status_code == 302 and response["Location"].startswith("/login/"), (url, response)
            elif needs in GRANTED[who]:
                # Allowed: done (200, a redirect) or not applicable now (409, say a second time), never refused.
                assert response.status_code in (200, 302, 409), (who, url, response.status_code)
            else:
                assert response.status_code == 403, (who, url, response.status_code)
        if needs not in GRANTED[who]:
            assert RunEvent.objects.count() == events, f"{who} changed something through {url}"
        if name not in READS:
            # A write URL has no page to read.
            assert client.get(url).status_code == (302 if who == "stranger" else 405), (who, url)


@pytest.mark.parametrize(("name", "route"), [u for u in ALL_URLS if u[0].startswith(ADMIN_SITE) and u[0] not in PUBLIC])
def test_the_admin_site_is_for_staff_only(people, name, route):
    url = fill(re.sub(r"<(?:\w+:)?\w+>", "1", route), {})
    for who in ["stranger", "viewer", "launcher", "reviewer"]:
        response = client_for(people[who]).get(url)
        # Strangers meet the site sign-in first, signed-in non-staff the admin sign-in.
        assert response.status_code == 302 and response["Location"].split("?")[0] in ("/login/", "/admin/login/"), (
            name,
            response,
        )


def test_every_api_url_wants_a_token(db):
    api = [route for name, route in ALL_URLS if name.startswith(API)]
    assert api and all(route.startswith("api/") for route in api)
    assert Client().get("/api/batches").status_code == 401


def test_the_sign_in_page_is_open(client, db):
    assert client.get("/login/").status_code == 200


def test_posts_need_a_csrf_token(member, make_batch):
    batch = make_batch(member)
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.post(f"/batches/{batch.id}/cancel/").status_code == 403
    assert client.post("/batches/new/", {"source": "yaml", "spec_text": "x"}).status_code == 403
    assert client.post(f"/batches/{batch.id}/reviews/", {"decision": "approve"}).status_code == 403
    assert client.post("/escalations/1/resolve/", {"action": "accept"}).status_code == 403
    assert client.post("/escalations/1/assign/", {"assignee": ""}).status_code == 403


# --- websockets ----------------------------------------------------------------------------


def ws_routes():
    for route in websocket_urlpatterns:
        kind = (route.default_args or {}).get("kind", "")
        yield kind, str(route.pattern)


def test_every_websocket_route_is_classified():
    kinds = [kind for kind, _ in ws_routes()]
    unknown = [k for k in kinds if k not in WS_LIVE and k != ""]
    assert not unknown, f"say who may open these websocket routes: {unknown}"
    assert set(kinds) == WS_LIVE | {""}, "the live pages and one fallback for unknown paths"
    assert kinds[-1] == "", "the fallback comes last"


def open_socket(path: str, person) -> tuple[bool, dict | None]:
    cookie = b""
    if person is not None:
        client = Client()
        client.force_login(person)
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    channel_layers.backends = {}

    async def scenario():
        headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)]
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect()
        first = await communicator.receive_output(timeout=3) if connected else None
        await communicator.disconnect()
        live = relay.get_relay()
        live.topics.clear()
        if live.task:
            await live.task
        return connected, first

    try:
        return async_to_sync(scenario)()
    finally:
        channel_layers.backends = {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("kind", "route"), list(ws_routes()))
def test_opening_a_websocket(people, objects, kind, route):
    path = fill(route, objects) if kind else "/ws/no-such-page/"
    for who in PEOPLE:
        connected, first = open_socket(path, people[who])
        if who == "stranger":
            assert connected and first == {"type": "websocket.close", "code": 4401}, (path, first)
        elif kind:
            assert connected and first["type"] == "websocket.send", (who, path, first)
        else:
            assert connected and first == {"type": "websocket.close", "code": 4404}, (who, path, first)
