"""The relay reads the event log in order and does not lose an event that commits late."""

from __future__ import annotations

from dashboard.live.relay import Relay
from spawner.engine import events
from spawner.models import RunEvent


def test_it_reads_events_after_the_last_one_seen(member, make_batch):
    batch = make_batch(member)
    relay = Relay()
    relay.last_id = RunEvent.objects.latest("id").id
    assert relay.fetch() == []
    first = events.record(batch_id=batch.id, kind="batch.cancel_requested")
    second = events.record(batch_id=batch.id, kind="batch.reopened")
    assert [e.id for e in relay.fetch()] == [first.id, second.id]
    assert relay.fetch() == []


def test_an_event_that_commits_after_a_later_one_is_still_delivered(member, make_batch):
    """PostgreSQL hands out ids before commit: id 11 can become visible after id 12."""
    batch = make_batch(member)
    relay = Relay()
    relay.last_id = RunEvent.objects.latest("id").id
    late = events.record(batch_id=batch.id, kind="run.output")
    early = events.record(batch_id=batch.id, kind="run.output")
    saved = {f.attname: getattr(late, f.attname) for f in RunEvent._meta.concrete_fields}
    late.delete()  # not committed yet, as far as the relay can tell
    assert [e.id for e in relay.fetch()] == [early.id]
    assert saved["id"] in relay.gaps
    RunEvent.objects.create(**saved)
    assert [e.id for e in relay.fetch()] == [saved["id"]]
    assert relay.gaps == {}
