"""A template on a one-minute cron schedule, launched by the real django-q2 scheduler of a real
`spawner_cluster`, as the person who scheduled it; and `spawn --template` with that cluster."""

from __future__ import annotations

import io
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from spawner import services
from spawner.models import Batch
from tests.dashboard.conftest import grant
from tests.spawner.helpers import wait_batch

SPEC = """\
name: tick ${what}
agent: sh
tasks:
  - key: a
    prompt: "echo ${what}"
"""
WAIT_SECONDS = 150  # the scheduler looks every 30 s; a one-minute cron fires at most every 60 s


@pytest.mark.integration
@pytest.mark.slow
def test_a_template_on_a_one_minute_schedule_launches_twice(cluster, agent_types):
    owner = grant(User.objects.create_user("sam", password="pw-sam-12345"), "add_batch")
    template = services.template_save(actor=owner, name="tick", spec_text=SPEC, variables_text="what=default")
    link = services.schedule_create(template=template, cron="* * * * *", tz="UTC", values={"what": "cron"}, actor=owner)
    # Due now rather than at the next minute, so both launches fit the bound: the scheduler itself
    # still picks it, and computes every next run from the cron expression.
    Schedule.objects.filter(id=link.schedule_id).update(next_run=timezone.now() - timezone.timedelta(seconds=1))
    started = time.monotonic()
    while Batch.objects.filter(template=template).count() < 2:
        assert time.monotonic() - started < WAIT_SECONDS, cluster.log_path.read_text(errors="replace")[-3000:]
        time.sleep(1)
    batches = list(Batch.objects.filter(template=template).order_by("id"))
    assert len(batches) == 2  # each tick once: two ticks, two batches
    first, second = batches
    # Two ticks, not one tick launched twice: the scheduler's looks are 30 s apart give or take its
    # own timing (CI saw 29.98 s), while a double launch would be milliseconds apart.
    assert (second.launched_at - first.launched_at).total_seconds() >= 20
    for batch in batches:
        batch = wait_batch(batch)
        assert batch.status == "succeeded" and batch.owner == owner and batch.name == "tick cron"
        assert batch.runs.get().output_tail.strip() == "cron"
    assert Schedule.objects.get(id=link.schedule_id).next_run > timezone.now() - timezone.timedelta(seconds=61)


@pytest.mark.integration
def test_spawn_template_with_vars_launches_through_the_running_cluster(cluster, agent_types):
    owner = grant(User.objects.create_user("sam", password="pw-sam-12345"), "add_batch")
    template = services.template_save(actor=owner, name="tick", spec_text=SPEC, variables_text="what=default")
    out = io.StringIO()
    call_command("spawn", "--template", "tick", "--var", "what=from the cli: a: b", "--wait", "--json", stdout=out)
    batch = Batch.objects.get()
    assert batch.template == template and batch.status == "succeeded"
    assert batch.runs.get().output_tail.strip() == "from the cli: a: b"
