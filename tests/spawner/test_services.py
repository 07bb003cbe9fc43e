"""Services refuse what a user may not do, with a message that says why."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from spawner import services, spec
from spawner.errors import ActionRefused, NotAllowed, SpecInvalid
from spawner.models import AgentRun, AgentType, RunAttempt

ONE = "name: one\nagent: {agent}\ncwd: {cwd}\ntasks:\n  - {{key: a, prompt: hi, cwd: {task_cwd}}}\n"


def load(agent="sh", cwd=".", task_cwd="."):
    return services.spec_load(ONE.format(agent=agent, cwd=cwd, task_cwd=task_cwd), is_admin=True)


@pytest.mark.parametrize(
    ("cwd", "task_cwd", "field"), [("/", ".", "batch"), ("..", ".", "batch"), (".", "../..", "task 'a'")]
)
def test_a_browser_launch_cannot_leave_the_work_directory(agent_types, tmp_path, cwd, task_cwd, field):
    (tmp_path / "work").mkdir()
    with pytest.raises(spec.SpecInvalid) as caught:
        services.batch_launch(batch_spec=load(cwd=cwd, task_cwd=task_cwd), base_dir=tmp_path / "work", confine=True)
    assert [(e.where, e.field) for e in caught.value.errors] == [(field, "cwd")]
    assert "must stay inside" in caught.value.errors[0].message


def test_a_missing_directory_is_a_field_error(agent_types, tmp_path):
    with pytest.raises(spec.SpecInvalid, match="cwd: directory .* does not exist"):
        services.batch_launch(batch_spec=load(task_cwd="nope"), base_dir=tmp_path)


def finished_run(agent: str, tmp_path) -> AgentRun:
    AgentType.objects.get_or_create(name="root-shell", defaults={"argv": ["sh", "-c", "{prompt}"], "admin_only": True})
    batch = services.batch_launch(
        batch_spec=load(agent=agent), base_dir=tmp_path, spec_text=ONE.format(agent=agent, cwd=".", task_cwd=".")
    )
    run = batch.runs.get()
    RunAttempt.objects.filter(run=run).update(status="failed")
    AgentRun.objects.filter(id=run.id).update(status="failed", output_tail="old output")
    batch.status = "failed"
    batch.save()
    return AgentRun.objects.get(id=run.id)


def test_only_an_admin_may_retry_an_admin_only_agent(agent_types, tmp_path):
    run = finished_run("root-shell", tmp_path)
    user = get_user_model().objects.create_user("u")
    user.user_permissions.add(Permission.objects.get(codename="add_batch"))
    user = get_user_model().objects.get(id=user.id)  # permissions are cached on the instance

    with pytest.raises(ActionRefused, match="only an admin may run root-shell again"):
        services.run_retry(run=run, actor=user)
    with pytest.raises(ActionRefused, match="only an admin"):
        services.batch_rerun_sequential(batch=run.batch, actor=user)


def test_a_retry_starts_with_empty_output(agent_types, tmp_path):
    run = finished_run("sh", tmp_path)
    services.run_retry(run=run, actor=None)
    run.refresh_from_db()
    assert (run.status, run.attempt, run.output_tail) == ("queued", 2, "")


def test_retrying_a_succeeded_run_is_refused(agent_types, tmp_path):
    run = finished_run("sh", tmp_path)
    AgentRun.objects.filter(id=run.id).update(status="succeeded")
    with pytest.raises(ActionRefused, match="only ended, unsuccessful runs retry"):
        services.run_retry(run=run, actor=None)


def test_a_user_without_the_launch_permission_may_not_retry_or_rerun(agent_types, tmp_path):
    run = finished_run("sh", tmp_path)
    user = get_user_model().objects.create_user("u")
    with pytest.raises(NotAllowed, match="permission to launch"):
        services.run_retry(run=run, actor=user)
    with pytest.raises(NotAllowed, match="permission to launch"):
        services.batch_rerun_sequential(batch=run.batch, actor=user)
    assert AgentRun.objects.get(id=run.id).attempt == 1


def test_a_user_may_cancel_their_own_batch_but_not_another_one(agent_types, tmp_path):
    owner, other = (get_user_model().objects.create_user(name) for name in ("owner", "other"))
    batch = services.batch_launch(
        batch_spec=load(agent="sh"),
        base_dir=tmp_path,
        owner=owner,
        spec_text=ONE.format(agent="sh", cwd=".", task_cwd="."),
    )
    with pytest.raises(NotAllowed, match="cancel"):
        services.batch_cancel(batch=batch, actor=other)
    services.batch_cancel(batch=batch, actor=owner)
    batch.refresh_from_db()
    assert batch.cancel_requested or batch.status == "cancelled"


def test_a_non_admin_rerun_may_not_carry_an_admins_webhook(agent_types, tmp_path):
    text = "name: w\nagent: sh\nwebhook: https://hooks.example.org/\ntasks:\n  - {key: a, prompt: x}\n"
    batch = services.batch_launch(batch_spec=services.spec_load(text, is_admin=True), base_dir=tmp_path)
    user = get_user_model().objects.create_user("u")
    user.user_permissions.add(Permission.objects.get(codename="add_batch"))
    user = get_user_model().objects.get(id=user.id)
    with pytest.raises(SpecInvalid, match="webhook"):
        services.batch_rerun_sequential(batch=batch, actor=user)
