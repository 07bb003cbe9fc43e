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
from spawner.models import Escalation, MergeStep, RunAttempt, WebhookDelivery, Workspace
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
    "batch-history",
    "batch-timeline",
    "compare",
    "batch-result",
    "batch-result-md",
    "batch-result-json",
    "escalations",
    "run",
    "run-log",
    "run-log-download",
    "run-log-lines",
    "run-log-search",
    "merge-candidates",
    "run-diff",
    "run-diff-download",
    "stats",
    "stats-json",
    "tokens",
    "templates",
    "template",
}
# Pages only an admin (staff) may read; any other signed-in person gets 403.
ADMIN_READS = {"webhooks", "clusters"}
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
    "personal-webhook": ("self", {"url": ""}),
    # Saved templates: anyone who may launch saves one and launches any; changing and scheduling
    # someone else's template is for an admin ("edit").
    "templates": ("launch", {"name": "mine", "spec_text": "name: x\nagent: sh\ntasks: [{key: a}]"}),
    "template": ("launch", {}),
    "template-edit": (
        "edit",
        {"action": "save", "name": "theirs", "spec_text": "name: y\nagent: sh\ntasks: [{key: a}]"},
    ),
    "template-schedule": ("edit", {"cron": "0 3 * * *", "timezone": "UTC"}),
    "schedule-action": ("edit", {"action": "pause"}),
    # The webhook delivery log's redelivery (admins only).
    "webhook-redeliver": ("admin", {}),
    # Draining a cluster (admins only; no cluster runs here, so the admin's ask is refused: 302 with a message).
    "cluster-drain": ("admin", {"name": "nowhere"}),
}
# What each person was granted; the admin may do everything.
GRANTED = {
    "stranger": set(),
    "viewer": {"self"},
    "launcher": {"self", "launch"},
    "reviewer": {"self", "review", "resolve"},
    "admin": {"self", "launch", "cancel", "review", "resolve", "edit", "admin"},
}
# Views that answer strangers: signing in and out (the site's and the admin's).
PUBLIC = {"login", "logout", "admin:login", "admin:logout", "favicon"}
# Django's admin site checks staff itself.
ADMIN_SITE = "admin:"
# The REST API answers with problem details (401 without a token): tests/api/ checks each endpoint.
API = "api-1:"
# The pages the API's problem `type` URIs point at: like the API's docs, a session or a token, else
# a 401 problem (tests/api/test_problem_pages.py).
API_PAGES = {"api-problems", "api-problem"}
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
        **_template_ids(reviewed.owner),
        "delivery_id": WebhookDelivery.objects.create(
            batch=reviewed,
            event="batch.ended",
            url="https://hooks.example.org/x",
            payload={},
            state="failed",
            next_attempt_at=reviewed.launched_at,
        ).id,
    }


def _template_ids(owner) -> dict[str, int]:
    """Someone else's saved template (no variables) and a schedule on it."""
    spec_text = "name: x\nagent: sh\ntasks: [{key: a}]"
    template = services.template_save(actor=owner, name="theirs", spec_text=spec_text)
    link = services.schedule_create(template=template, cron="0 3 * * *", tz="UTC", actor=owner)
    return {"template_id": template.id, "schedule_id": link.id}


def client_for(person) -> Client:
    client = Client()
    if person is not None:
        client.force_login(person)
    return client


def test_every_dashboard_url_is_classified():
    known = READS | ADMIN_READS | set(WRITES) | PUBLIC | API_PAGES
    unknown = [(name, route) for name, route in DASHBOARD_URLS if name not in known]
    assert not unknown, f"say who may use these URLs in READS or WRITES: {unknown}"


def test_the_url_conf_has_the_dashboard_pages():
    names = {name for name, _ in ALL_URLS}
    assert READS | ADMIN_READS | set(WRITES) | PUBLIC | API_PAGES <= names, "a classified URL no longer exists"


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


@pytest.mark.parametrize(("name", "route"), [u for u in DASHBOARD_URLS if u[0] in ADMIN_READS])
def test_reading_an_admin_page(people, objects, name, route):
    url = fill(route, objects)
    for who in PEOPLE:
        client = client_for(people[who])
        response = client.get(url)
        if who == "stranger":
            assert response.status_code == 302 and response["Location"].startswith("/login/"), (url, response)
        else:
            assert response.status_code == (200 if who == "admin" else 403), (who, url, response.status_code)
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
            if who == "stranger" and headers:
                # htmx would swap the sign-in page into a fragment: the whole page goes there instead.
                assert response.status_code == 200 and response["HX-Redirect"].startswith("/login/?next="), url
            elif who == "stranger":
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


def test_the_favicon_is_open(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("/favicon.svg")


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


# --- what each page offers whom --------------------------------------------------------------
# The buttons a page shows are those its reader may use; the others are absent and the page says
# why. The server still refuses (403) what the button would have done.

LAUNCH_WHY = "you need the permission to launch batches"
RESOLVE_WHY = "you need the permission to assign and resolve escalations"


@pytest.fixture
def matrix_people(db, member, viewer, reviewer, admin):
    """The batches' owner (may launch, review, resolve), a teammate with no permission, one who may
    review and resolve but not launch, and an admin."""
    return {"owner": member, "viewer": viewer, "reviewer": reviewer, "admin": admin}


def section(html: str, marker: str, end: str = "</section>") -> str:
    assert marker in html, marker
    return html.split(marker, 1)[1].split(end, 1)[0]


def test_the_batch_page_offers_retry_and_rerun_only_to_who_may_launch(matrix_people, objects):
    url = f"/batches/{objects['batch_id']}/"
    for who, person in matrix_people.items():
        header = section(client_for(person).get(url).content.decode(), 'id="batch-header"')
        may = who in ("owner", "admin")
        assert ("Retry failed runs</button>" in header) is may, who
        assert ("Re-run sequentially to compare</button>" in header) is may, who
        assert (f"Retrying failed runs and re-running: {LAUNCH_WHY}." in header) is not may, who
        if not may:
            assert client_for(person).post(f"{url}retry-failed/", headers={"HX-Request": "true"}).status_code == 403


def test_cancel_shows_for_the_owner_and_who_may_cancel_any_batch(matrix_people, make_batch, member):
    batch = make_batch(member)  # running
    run = batch.runs.get(key="lint")
    for who, person in matrix_people.items():
        client = client_for(person)
        header = section(client.get(f"/batches/{batch.id}/").content.decode(), 'id="batch-header"')
        run_header = section(client.get(f"/runs/{run.id}/").content.decode(), 'id="run-header"')
        may = who in ("owner", "admin")
        assert ("Cancel batch</button>" in header) is may, who
        assert (">Cancel</button>" in run_header) is may, who
        if not may:
            why = "Cancelling: you need the permission to cancel batches (or to own this one)."
            assert why in header and why in run_header, who
            assert client.post(f"/batches/{batch.id}/cancel/").status_code == 403
            assert client.post(f"/runs/{run.id}/cancel/", headers={"HX-Request": "true"}).status_code == 403
    batch.refresh_from_db()
    assert not batch.cancel_requested


def test_the_run_page_offers_retry_only_to_who_may_launch(matrix_people, objects):
    url = f"/runs/{objects['run_id']}/"
    for who, person in matrix_people.items():
        run_header = section(client_for(person).get(url).content.decode(), 'id="run-header"')
        may = who in ("owner", "admin")
        assert (">Retry</button>" in run_header) is may, who
        assert (f"Retrying: {LAUNCH_WHY}." in run_header) is not may, who
        if not may:
            assert client_for(person).post(f"{url}retry/", headers={"HX-Request": "true"}).status_code == 403


def test_an_admin_only_type_is_retried_by_an_admin_only(matrix_people, objects):
    from spawner.models import AgentRun

    run = AgentRun.objects.select_related("agent_type").get(id=objects["run_id"])
    type(run.agent_type).objects.filter(id=run.agent_type_id).update(admin_only=True)
    for who, person in matrix_people.items():
        run_header = section(client_for(person).get(f"/runs/{run.id}/").content.decode(), 'id="run-header"')
        assert (">Retry</button>" in run_header) is (who == "admin"), who
    owner_header = section(client_for(matrix_people["owner"]).get(f"/runs/{run.id}/").content.decode(), "run-header")
    assert "Retrying: only an admin may run this agent type." in owner_header


def test_the_result_page_offers_the_review_form_to_reviewers_only(matrix_people, objects):
    url = f"/batches/{objects['batch_id']}/result/"
    for who, person in matrix_people.items():
        html = client_for(person).get(url).content.decode()
        may = who != "viewer"
        assert ('class="review-form"' in html) is may, who
        assert ("Reviewing: you need the permission to review results" in html) is not may, who
        assert "Export Markdown" in html and "Export JSON" in html  # reading is for everyone
        if not may:
            post = client_for(person).post(f"/batches/{objects['batch_id']}/reviews/", {"decision": "approve"})
            assert post.status_code == 403


def test_the_escalations_page_offers_assign_resolve_and_retry_to_who_may(matrix_people, objects):
    from spawner.models import Escalation

    escalation = Escalation.objects.get(id=objects["escalation_id"])
    for who, person in matrix_people.items():
        html = client_for(person).get("/escalations/").content.decode()
        card = section(html, f'id="escalation-{escalation.id}"', "</article>")
        may_resolve, may_launch = who != "viewer", who in ("owner", "admin")
        assert ("<form" in card) is may_resolve, who
        assert ("Retry the run</button>" in card) is may_launch, who
        assert (f"Assigning and resolving: {RESOLVE_WHY}" in card) is not may_resolve, who
        if may_resolve and not may_launch:
            assert f"Retrying the run: {LAUNCH_WHY}." in card
        client = client_for(person)
        if not may_launch:
            body = {"action": "retry"}
            response = client.post(f"/escalations/{escalation.id}/resolve/", body, headers={"HX-Request": "true"})
            assert response.status_code == 403, who
        if not may_resolve:
            response = client.post(f"/escalations/{escalation.id}/assign/", {"assignee": ""})
            assert response.status_code == 403


def test_the_merge_queue_offers_its_buttons_to_who_may_resolve(matrix_people, objects):
    url = f"/batches/{objects['batch_id']}/"
    for who, person in matrix_people.items():
        merge = section(client_for(person).get(url).content.decode(), 'id="merge-section"')
        may = who != "viewer"
        assert ("Skip</button>" in merge) is may, who
        assert ("Merging, skipping, reverting and resolving conflicts: " + RESOLVE_WHY in merge) is not may, who
        if not may:
            response = client_for(person).post(f"/merge-steps/{objects['step_id']}/", {"action": "skip"})
            assert response.status_code == 403


def test_the_batch_list_offers_a_new_batch_to_who_may_launch(matrix_people, objects):
    for who, person in matrix_people.items():
        head = section(client_for(person).get("/").content.decode(), 'class="page-head"', "</div>")
        may = who in ("owner", "admin")
        assert ("New batch</a>" in head) is may, who
        assert (f"Launching batches: {LAUNCH_WHY}." in head) is not may, who


def test_live_fragments_carry_the_buttons_of_their_readers(matrix_people, objects):
    """Readers with different rights watch different topics; each gets only its own buttons."""
    from dashboard.live import topics

    kwargs = {"batch_id": objects["batch_id"]}
    owner = topics.topic_for("batch", kwargs, {}, matrix_people["owner"])
    viewer = topics.topic_for("batch", kwargs, {}, matrix_people["viewer"])
    assert owner.name != viewer.name
    assert "Retry failed runs</button>" in "".join(owner.snapshot())
    seen = "".join(viewer.snapshot())
    assert "Retry failed runs</button>" not in seen and "Skip</button>" not in seen and LAUNCH_WHY in seen
    run = topics.topic_for("run", {"run_id": objects["run_id"]}, {}, matrix_people["viewer"])
    assert ">Retry</button>" not in "".join(run.snapshot())
    queue = topics.topic_for("escalations", {}, {}, matrix_people["viewer"])
    assert "<form" not in "".join(queue.snapshot())


def test_the_compare_page_offers_the_rerun_to_who_may_launch(matrix_people, objects):
    url = f"/batches/{objects['batch_id']}/compare/"
    for who, person in matrix_people.items():
        html = section(client_for(person).get(url).content.decode(), 'id="comparison"')
        may = who in ("owner", "admin")
        assert ("Re-run sequentially</button>" in html) is may, who
        assert (f"Re-running: {LAUNCH_WHY}." in html) is not may, who


def test_page_may_names_each_right_and_the_reason_for_each_missing_one(matrix_people, objects):
    from spawner import permissions
    from spawner.models import Batch

    batch = Batch.objects.get(id=objects["batch_id"])
    owner = permissions.page_may(matrix_people["owner"], batch)
    viewer = permissions.page_may(matrix_people["viewer"], batch)
    admin = permissions.page_may(matrix_people["admin"], batch)
    assert {k: v for k, v in owner.items() if k != "why"} == {
        "launch": True,
        "cancel": True,
        "admin": False,
        "resolve": True,
        "review": True,
    }
    assert owner["why"] == {"admin": "only an admin may run this agent type"}
    assert not any(v for k, v in viewer.items() if k != "why") and set(viewer["why"]) == set(permissions.TOKENS)
    assert admin["why"] == {} and len({owner.key, viewer.key, admin.key}) == 3
    assert permissions.page_may(None)["why"]["launch"] == "you need the permission to launch batches"
    assert permissions.allows(owner, "resolve launch") and not permissions.allows(owner, "launch admin")
