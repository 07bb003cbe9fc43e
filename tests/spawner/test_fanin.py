"""Fan-in against a real cluster: the race, escalations, reviews (webhooks: test_webhooks.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from spawner import selectors, services
from spawner.errors import ActionRefused
from spawner.models import Aggregation, Escalation, RunEvent
from tests.spawner.helpers import launch, pid_alive, wait_batch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def teammate(name: str, *codenames: str):
    """A user with these spawner permissions (see spawner/permissions.py)."""
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(name)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="spawner", codename__in=codenames))
    return get_user_model().objects.get(id=user.id)


def test_first_success_cancels_the_losers_processes(cluster, agent_types, tmp_path):
    pids = tmp_path / "pids"
    spec = f"""
name: race
agent: sh
aggregation: first_success
tasks:
  - key: hare
    prompt: "echo $$ >> {pids}; sleep 0.5; echo '{{\\"summary\\": \\"hare wins\\"}}' > $SPAWNER_RESULT_FILE"
  - {{key: tortoise, prompt: "echo $$ >> {pids}; sleep 60"}}
  - {{key: snail, prompt: "echo $$ >> {pids}; sleep 60"}}
"""
    batch = wait_batch(launch(spec, tmp_path), timeout=30)

    assert batch.status == "succeeded"
    assert dict(batch.runs.values_list("key", "status")) == {
        "hare": "succeeded",
        "tortoise": "cancelled",
        "snail": "cancelled",
    }
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not pid_alive(pid), 10, f"loser {pid} to be stopped")
    agg = Aggregation.objects.get(batch=batch)
    assert agg.data["winner"] == "hare"
    assert agg.data["summary"].endswith("hare wins")


def test_a_failed_p0_run_escalates_and_a_retry_resolves_it(cluster, agent_types, tmp_path):
    marker = tmp_path / "fixed"
    spec = f"""
name: p0
agent: sh
aggregation: merge
tasks:
  - {{key: critical, priority: P0, prompt: "test -f {marker}"}}
  - {{key: minor, priority: P2, prompt: "exit 1"}}
  - {{key: fine, prompt: "echo ok"}}
"""
    batch = wait_batch(launch(spec, tmp_path))
    assert batch.status == "partial"
    escalation = Escalation.objects.get(batch=batch)
    assert (escalation.kind, escalation.run.key, escalation.state) == ("p0_failed", "critical", "open")
    notes = {n["run"]: n["level"] for n in batch.aggregation_result.data["notes"]}
    assert notes == {"critical": "escalation", "minor": "note"}

    alice = teammate("alice", "resolve_escalation")
    bob = teammate("bob", "resolve_escalation", "add_batch")
    services.escalation_assign(escalation=escalation, assignee=bob, actor=alice)
    marker.touch()
    services.escalation_resolve(escalation=escalation, action="retry", note="fixed the marker", actor=bob)
    batch = wait_batch(batch)

    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolution, escalation.resolved_by) == ("resolved", "retried", bob)
    assert escalation.assignee == bob
    assert batch.runs.get(key="critical").status == "succeeded"
    assert batch.status == "partial", "minor still failed"
    actors = dict(RunEvent.objects.filter(kind__startswith="escalation.").values_list("kind", "actor__username"))
    assert actors["escalation.assigned"] == "alice"
    assert actors["escalation.resolved"] == "bob"
    with pytest.raises(ActionRefused):
        services.escalation_resolve(escalation=escalation, action="accept", actor=bob)


def test_a_run_that_succeeds_on_its_own_retry_closes_its_escalation(cluster, agent_types, tmp_path):
    marker = tmp_path / "m"
    spec = f"name: s\nagent: sh\ntasks:\n  - {{key: c, priority: P0, prompt: 'test -f {marker}'}}\n"
    batch = wait_batch(launch(spec, tmp_path))
    marker.touch()

    services.run_retry(run=batch.runs.get(), actor=None)
    wait_batch(batch)

    assert Escalation.objects.get(batch=batch).resolution == "superseded"


def test_a_vote_tie_escalates_the_batch(cluster, agent_types, tmp_path):
    spec = r"""
name: vote
agent: sh
aggregation: vote
tasks:
  - {key: a, prompt: "echo '{\"verdict\": \"pass\"}' > $SPAWNER_RESULT_FILE"}
  - {key: b, prompt: "echo '{\"verdict\": \"fail\"}' > $SPAWNER_RESULT_FILE"}
"""
    batch = wait_batch(launch(spec, tmp_path))

    escalation = Escalation.objects.get(batch=batch)
    assert escalation.kind == "vote" and escalation.run is None
    assert "tie" in escalation.reason
    with pytest.raises(ActionRefused, match="whole batch"):
        services.escalation_resolve(escalation=escalation, action="retry", actor=None)
    with pytest.raises(ActionRefused, match="say why"):
        services.escalation_resolve(escalation=escalation, action="dismiss", note=" ", actor=None)
    services.escalation_resolve(escalation=escalation, action="dismiss", note="humans decided: pass", actor=None)
    escalation.refresh_from_db()
    assert escalation.state == "dismissed"


def test_reviews_decide_the_review_state(db):
    from spawner.models import Batch

    alice, bob = teammate("alice", "review_batch"), teammate("bob", "review_batch")
    batch = Batch.objects.create(name="b", spec={})
    assert selectors.review_state(batch) == "pending"
    services.review_submit(batch=batch, author=alice, decision="approve")
    assert selectors.review_state(batch) == "approved"
    services.review_submit(batch=batch, author=bob, decision="request_changes", comment="merge is missing docs")
    assert selectors.review_state(batch) == "changes_requested"
    services.review_submit(batch=batch, author=bob, decision="approve", comment="ok now")
    assert selectors.review_state(batch) == "approved"
    with pytest.raises(ActionRefused, match="say what should change"):
        services.review_submit(batch=batch, author=bob, decision="request_changes")
