"""A run waiting out a rate limit shows "waiting: rate limited"; the admin checks a model agent type."""

from __future__ import annotations

from django.utils import timezone

from spawner.engine import transitions
from spawner.models import AgentType, RunAttempt
from spawner.states import AttemptStatus, RunStatus
from tests.dashboard.conftest import move


def test_a_rate_limited_run_shows_waiting_on_the_batch_and_run_pages(signed_in, member, make_batch):
    batch = make_batch(member)
    run = batch.runs.get(key="lint")
    move(run, "running")
    attempt = RunAttempt.objects.select_related("run__batch").get(run=run, number=run.attempt)
    end = transitions.AttemptEnd(status=AttemptStatus.RATE_LIMITED, exit_code=75, error="rate limited", retry_after=60)
    assert transitions.attempt_end(attempt, end, backoff_cap=60)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.rate_limited_until > timezone.now()
    for url in (f"/batches/{batch.id}/", f"/runs/{run.id}/"):
        assert "waiting: rate limited" in signed_in.get(url).content.decode(), url


def test_the_admin_refuses_a_model_agent_type_without_its_endpoint(client, admin):
    client.force_login(admin)
    form = {"name": "reviewer", "kind": "model", "prompt_via": "arg", "prompt_kind": "text"}
    form.update(spawn_stagger_seconds="0", enabled="on")
    for field in ("argv", "env", "secret_names", "success_exit_codes", "rate_limit_exit_codes"):
        form[field] = "[]" if field != "env" else "{}"
    html = client.post("/admin/spawner/agenttype/add/", form).content.decode()
    assert "A model agent type needs the endpoint" in html and "needs a model name" in html
    form.update(base_url="http://127.0.0.1:11434/v1", model="qwen2.5-coder", api_key_secret="OLLAMA_KEY")
    response = client.post("/admin/spawner/agenttype/add/", form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    saved = AgentType.objects.get(name="reviewer")
    assert saved.is_model and saved.secret_names == ["OLLAMA_KEY"] and saved.available
