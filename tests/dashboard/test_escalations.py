"""The escalations queue: what it shows, its filters, assigning, and retry, accept or dismiss."""

from __future__ import annotations

import pytest

from spawner import services
from spawner.engine import transitions
from spawner.models import Escalation, RunEvent
from tests.dashboard.conftest import FANIN_SPEC, end_with_results, finish, grant

HX = {"HX-Request": "true"}


@pytest.fixture
def escalation(reviewed) -> Escalation:
    return Escalation.objects.get(batch=reviewed)


def card(html: str, escalation: Escalation) -> str:
    return html.split(f'id="escalation-{escalation.id}"', 1)[1].split("</article>", 1)[0]


def test_the_queue_shows_an_open_escalation_with_its_context(signed_in, escalation):
    html = signed_in.get("/escalations/").content.decode()
    assert 'ws-connect="/ws/escalations/"' in html
    shown = card(html, escalation)
    assert "P0 run failed" in shown and "P0 run &#x27;critical&#x27; ended failed: exit code 1" in shown
    assert f'href="/batches/{escalation.batch_id}/">#{escalation.batch_id} review' in shown
    assert "test -f marker" in shown  # the run's prompt
    assert "#1 failed, exit 1" in shown  # its attempts
    assert "critical says hello" in shown  # its last output
    assert "Retry the run" in shown and "Dismiss" in shown
    assert "<strong>Spawner</strong> opened it" in shown
    assert "{#" not in html and "{%" not in html, "no template syntax leaks into the page"


def test_a_long_reason_shows_its_first_paragraph_and_folds_the_rest(signed_in, escalation):
    conflict = "run 'a' does not merge onto spawner/1/integration: conflict in x.py\n\nx.py, line 3:\n<<<<<<< ours"
    Escalation.objects.filter(id=escalation.id).update(reason=conflict)  # as a merge conflict writes it
    shown = card(signed_in.get("/escalations/").content.decode(), escalation)
    headline = "run &#x27;a&#x27; does not merge onto spawner/1/integration: conflict in x.py"
    assert f'<p class="reason">{headline}</p>' in shown
    assert "<summary>Details</summary>" in shown and "&lt;&lt;&lt;&lt;&lt;&lt;&lt; ours" in shown


def test_every_page_shows_the_open_count_in_its_header(signed_in, escalation):
    html = signed_in.get("/").content.decode()
    assert 'ws-connect="/ws/site/"' in html
    badge = html.split('id="escalation-badge"', 1)[1].split("</a>", 1)[0]
    assert 'class="escalations-link has-open"' in badge and '<span class="count">1</span>' in badge


def test_open_escalations_come_first_and_closed_ones_only_under_all(signed_in, member, make_batch, escalation):
    services.escalation_resolve(escalation=escalation, action="accept", actor=member)
    later = end_with_results(make_batch(member, text=FANIN_SPEC), {}, failed=("critical",))
    newer = Escalation.objects.get(batch=later)
    html = signed_in.get("/escalations/").content.decode()
    assert f'id="escalation-{newer.id}"' in html and f'id="escalation-{escalation.id}"' not in html
    html = signed_in.get("/escalations/?show=all").content.decode()
    assert html.index(f'id="escalation-{newer.id}"') < html.index(f'id="escalation-{escalation.id}"')
    assert "Accepted the partial result</strong> by mia" in card(html, escalation)


def test_mine_shows_what_is_assigned_to_me(signed_in, member, teammate, escalation):
    assert "Nothing is assigned to you" in signed_in.get("/escalations/?show=mine").content.decode()
    services.escalation_assign(escalation=escalation, assignee=member, actor=member)
    html = signed_in.get("/escalations/?show=mine").content.decode()
    assert f'id="escalation-{escalation.id}"' in html


def test_the_queue_filters_by_batch(signed_in, member, make_batch, escalation):
    other = end_with_results(make_batch(member, text=FANIN_SPEC), {}, failed=("critical",))
    html = signed_in.get(f"/escalations/?batch={other.id}").content.decode()
    assert f'id="escalation-{escalation.id}"' not in html and "batch #" in html


def test_assigning_to_a_teammate_is_recorded_with_who_did_it(signed_in, member, teammate, escalation):
    response = signed_in.post(f"/escalations/{escalation.id}/assign/", {"assignee": teammate.id}, headers=HX)
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith(f'<article id="escalation-{escalation.id}"')
    assert 'hx-swap-oob="true"' in html.split(">", 1)[0], "the answer lands even if the card was redrawn meanwhile"
    assert '<strong class="assignee">bob</strong>' in html and "Assigned to bob." in html
    assert "<strong>mia</strong> assigned it to bob" in html
    escalation.refresh_from_db()
    assert escalation.assignee == teammate
    assert RunEvent.objects.get(kind="escalation.assigned").actor == member


def test_assigning_to_someone_unknown_is_refused(signed_in, escalation):
    response = signed_in.post(f"/escalations/{escalation.id}/assign/", {"assignee": 999}, headers=HX)
    assert response.status_code == 400 and "choose a teammate" in response.content.decode().lower()


def test_resolving_by_retry_queues_a_new_attempt(signed_in, member, escalation):
    response = signed_in.post(
        f"/escalations/{escalation.id}/resolve/", {"action": "retry", "note": "marker made"}, headers=HX
    )
    html = response.content.decode()
    assert response.status_code == 200 and "Retrying &#x27;critical&#x27;" in html
    assert "Retried the run</strong> by mia" in html and "marker made" in html
    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolution, escalation.resolved_by) == ("resolved", "retried", member)
    assert (escalation.run.status, escalation.run.attempt) == ("queued", 2)
    assert RunEvent.objects.get(kind="run.retried").actor == member


def test_retry_needs_the_launch_permission(client, reviewer, escalation):
    client.force_login(reviewer)
    response = client.post(f"/escalations/{escalation.id}/resolve/", {"action": "retry"}, headers=HX)
    assert response.status_code == 403 and "permission to launch" in response.content.decode()
    escalation.refresh_from_db()
    assert escalation.state == "open"


def test_a_viewer_may_neither_accept_dismiss_nor_assign(client, viewer, teammate, escalation):
    client.force_login(viewer)
    for action in ("accept", "dismiss"):
        response = client.post(f"/escalations/{escalation.id}/resolve/", {"action": action, "note": "x"}, headers=HX)
        assert response.status_code == 403
        assert "permission to assign and resolve escalations" in response.content.decode()
    response = client.post(f"/escalations/{escalation.id}/assign/", {"assignee": teammate.id}, headers=HX)
    assert response.status_code == 403
    escalation.refresh_from_db()
    assert (escalation.state, escalation.assignee) == ("open", None)
    assert not RunEvent.objects.filter(kind__in=["escalation.resolved", "escalation.assigned"]).exists()


def test_without_htmx_a_refusal_is_a_403_page(client, viewer, escalation):
    client.force_login(viewer)
    response = client.post(f"/escalations/{escalation.id}/resolve/", {"action": "accept"})
    assert response.status_code == 403 and "permission to assign and resolve" in response.content.decode()


def test_a_reviewer_may_accept_the_partial_result(client, reviewer, escalation):
    client.force_login(reviewer)
    response = client.post(f"/escalations/{escalation.id}/resolve/", {"action": "accept"}, headers=HX)
    assert response.status_code == 200
    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolution, escalation.resolved_by) == ("resolved", "accepted", reviewer)


def test_the_engine_refuses_a_retry_by_someone_who_may_not_launch(reviewer, escalation):
    from spawner.errors import NotAllowed

    with pytest.raises(NotAllowed, match="permission to launch"):
        services.escalation_resolve(escalation=escalation, action="retry", actor=reviewer)


def test_the_engine_refuses_a_resolve_or_assign_without_the_permission(viewer, launcher, teammate, escalation):
    from spawner.errors import NotAllowed

    for actor in (viewer, launcher):
        with pytest.raises(NotAllowed, match="resolve escalations"):
            services.escalation_resolve(escalation=escalation, action="dismiss", note="x", actor=actor)
        with pytest.raises(NotAllowed, match="resolve escalations"):
            services.escalation_assign(escalation=escalation, assignee=teammate, actor=actor)
    escalation.refresh_from_db()
    assert escalation.state == "open"


def test_the_queue_hides_the_forms_from_who_may_not_use_them(client, viewer, reviewer, escalation):
    client.force_login(viewer)
    html = client.get("/escalations/").content.decode()
    assert 'data-may=""' in html
    # The forms are not sent to who may not use them; the card says why instead.
    assert 'data-needs="resolve"' not in card(html, escalation) and "<form" not in card(html, escalation)
    why = "Assigning and resolving: you need the permission to assign and resolve escalations"
    assert why in card(html, escalation)
    client.force_login(reviewer)
    assert 'data-may="resolve review"' in client.get("/escalations/").content.decode()


def test_dismissing_needs_a_reason_shown_next_to_the_form(signed_in, escalation):
    response = signed_in.post(f"/escalations/{escalation.id}/resolve/", {"action": "dismiss", "note": " "}, headers=HX)
    html = response.content.decode()
    assert response.status_code == 409
    assert '<p class="notice error" role="alert">Say why you dismiss it</p>' in html
    assert 'class="resolve"' in html, "the forms stay, to try again"
    escalation.refresh_from_db()
    assert escalation.state == "open"


def test_dismissing_with_a_reason_closes_it(signed_in, member, escalation):
    response = signed_in.post(
        f"/escalations/{escalation.id}/resolve/", {"action": "dismiss", "note": "flaky disk"}, headers=HX
    )
    assert response.status_code == 200
    assert "<strong>mia</strong> dismissed it: <q>flaky disk</q>" in response.content.decode()
    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolution_note) == ("dismissed", "flaky disk")


def test_resolving_a_closed_escalation_is_refused(signed_in, member, escalation):
    services.escalation_resolve(escalation=escalation, action="accept", actor=member)
    for action in ("accept", "dismiss", "retry"):
        response = signed_in.post(f"/escalations/{escalation.id}/resolve/", {"action": action, "note": "x"}, headers=HX)
        assert response.status_code == 409, action
    response = signed_in.post(f"/escalations/{escalation.id}/assign/", {"assignee": ""}, headers=HX)
    assert response.status_code == 409 and "no longer open" in response.content.decode()


def test_a_vote_escalation_cannot_be_retried_as_one_run(signed_in, member, make_batch):
    batch = finish(make_batch(member), "succeeded")
    escalation = transitions.escalation_open(batch=batch, run=None, kind="vote", reason="tie between fail, pass")
    html = signed_in.get("/escalations/").content.decode()
    assert "Retry the run" not in card(html, escalation)
    response = signed_in.post(f"/escalations/{escalation.id}/resolve/", {"action": "retry"}, headers=HX)
    assert response.status_code == 409 and "whole batch" in response.content.decode()


def test_an_unknown_action_is_refused(signed_in, escalation):
    response = signed_in.post(f"/escalations/{escalation.id}/resolve/", {"action": "explode"}, headers=HX)
    assert response.status_code == 400


def test_without_htmx_an_action_redirects_to_the_queue_with_a_message(signed_in, escalation):
    response = signed_in.post(f"/escalations/{escalation.id}/resolve/", {"action": "dismiss"}, follow=True)
    assert response.redirect_chain[-1][0] == "/escalations/"
    assert "say why you dismiss it" in response.content.decode()


def test_the_cancel_permission_is_not_enough_to_retry(client, viewer, escalation):
    client.force_login(grant(viewer, "cancel_batch"))
    assert client.post(f"/escalations/{escalation.id}/resolve/", {"action": "retry"}).status_code == 403


def test_an_unknown_escalation_is_not_found(signed_in, db):
    assert signed_in.post("/escalations/999/resolve/", {"action": "accept"}).status_code == 404
