"""Spec values that YAML allows and a batch cannot hold."""

from __future__ import annotations

import pytest

from spawner import spec

AGENTS = {"sh": spec.AgentInfo("sh")}


def test_dates_in_a_spec_stay_text():
    batch = spec.load(
        "name: d\nagent: sh\nvars: {when: 2024-01-01}\ntasks:\n  - {key: a, prompt: 'on {{ when }}'}\n",
        agents=AGENTS,
        roles={},
    )
    assert batch.tasks[0].prompt == "on 2024-01-01"


@pytest.mark.parametrize("text", ["name: x\ntasks: !!binary aGVsbG8=\n", 'name: "a\\0b"\ntasks: []\n', "name: a\x00\n"])
def test_values_json_cannot_hold_are_refused(text):
    with pytest.raises(spec.SpecInvalid, match="NUL|plain text"):
        spec.load(text, agents=AGENTS, roles={})


def test_only_an_admin_may_set_a_webhook():
    text = "name: w\nagent: sh\nwebhook: https://hooks.example.org/\ntasks:\n  - {key: a}\n"
    with pytest.raises(spec.SpecInvalid, match="webhook: may only be set by an admin"):
        spec.load(text, agents=AGENTS, roles={})
    assert spec.load(text, agents=AGENTS, roles={}, is_admin=True).webhook == "https://hooks.example.org/"


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://localhost:8000/", "localhost"),
    ],
)
def test_even_an_admin_may_not_point_a_webhook_at_a_private_address(url, why):
    text = f"name: w\nagent: sh\nwebhook: '{url}'\ntasks:\n  - {{key: a}}\n"
    with pytest.raises(spec.SpecInvalid, match=f"webhook: may not target .*{why}"):
        spec.load(text, agents=AGENTS, roles={}, is_admin=True)
    hosts = {"10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "localhost"}
    allowed = spec.Limits(webhook_allow_hosts=frozenset(hosts))
    assert spec.load(text, agents=AGENTS, roles={}, is_admin=True, limits=allowed).webhook == url
