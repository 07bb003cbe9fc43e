"""A coding agent's final message becomes its run's result when it wrote no result file
(any process that prints a CLI's JSON output will do: no real CLI needed here)."""

from __future__ import annotations

import importlib
import json

import pytest
from django.apps import apps

from spawner import presets
from spawner.models import AgentRun, AgentType, Role
from tests.spawner.helpers import launch, wait_batch

PRESET_MIGRATION = importlib.import_module("spawner.migrations.0011_coding_agent_presets")
AIDER_TEXT_MIGRATION = importlib.import_module("spawner.migrations.0022_clirate")


def claude_line(message: str) -> str:
    return json.dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": message,
            "usage": {"input_tokens": 10, "output_tokens": 5},
            "total_cost_usd": 0.01,
            "num_turns": 1,
        }
    )


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_final_message_is_the_result_unless_a_result_file_was_written(cluster, tmp_path):
    AgentType.objects.create(name="fake-claude", argv=["sh", "-c", "{prompt}"], output_format="claude-json")
    fenced = claude_line('Found one.\n```json\n{"findings": [{"title": "bug", "severity": "high"}]}\n```')
    plain = claude_line("All good.")
    spec = {
        "name": "final message",
        "agent": "fake-claude",
        "tasks": [
            {"key": "fenced", "prompt": f"echo 'progress on stderr' >&2; printf '%s\\n' '{fenced}'"},
            {"key": "plain", "prompt": f"printf '%s\\n' '{plain}'"},
            {"key": "file", "prompt": f"echo '{{\"summary\": \"from file\"}}' > $SPAWNER_RESULT_FILE; echo '{plain}'"},
            {"key": "bad-file", "prompt": f"echo 'not json' > $SPAWNER_RESULT_FILE; echo '{plain}'"},
            {"key": "failed", "prompt": f"echo '{plain}'; exit 3"},
        ],
    }
    batch = wait_batch(launch(json.dumps(spec), tmp_path))

    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert runs["fenced"].result == {
        "summary": "Found one.",
        "findings": [{"title": "bug", "severity": "high"}],
        "tokens": 15,
        "cost": 0.01,
    }
    assert runs["plain"].result == {"summary": "All good.", "tokens": 15, "cost": 0.01}
    assert runs["file"].result == {"summary": "from file"}, "the result file wins, as before"
    assert runs["bad-file"].result is None and "not valid JSON" in runs["bad-file"].result_error
    assert runs["failed"].result is None, "a failed attempt's message is not its result"


@pytest.mark.django_db
def test_preset_migration_moves_only_rows_that_still_hold_the_old_presets():
    for name, argv in presets.OLD_CODING_ARGV.items():
        AgentType.objects.update_or_create(name=name, defaults={"argv": argv, "prompt_via": "arg", "output_format": ""})
    AgentType.objects.filter(name="gemini").update(argv=["gemini", "-m", "mine", "-p", "{prompt}"])  # an admin's
    for name, template in presets.OLD_ROLES.items():
        Role.objects.update_or_create(name=name, defaults={"template": template})
    Role.objects.filter(name="tester").update(template="my own {{ task }}")

    PRESET_MIGRATION.coding_presets(apps, None)
    AIDER_TEXT_MIGRATION.aider_text(apps, None)

    types = {t.name: t for t in AgentType.objects.all()}
    for name in ("claude-code", "codex", "aider"):
        shipped = next(t for t in presets.AGENT_TYPES if t["name"] == name)
        assert types[name].argv == shipped["argv"]
        assert types[name].prompt_via == shipped["prompt_via"]
        assert types[name].output_format == shipped["output_format"]
    assert types["gemini"].argv == ["gemini", "-m", "mine", "-p", "{prompt}"], "an admin's change is kept"
    assert types["gemini"].output_format == "" and types["gemini"].prompt_via == "arg"
    roles = dict(Role.objects.values_list("name", "template"))
    assert roles["reviewer"] == presets.ROLES["reviewer"]
    assert roles["tester"] == "my own {{ task }}"


@pytest.mark.django_db
def test_aider_text_migration_leaves_an_admins_aider_alone():
    shipped = next(t for t in presets.AGENT_TYPES if t["name"] == "aider")
    before = AIDER_TEXT_MIGRATION.AIDER_ARGV  # the preset as the previous release shipped it
    AgentType.objects.update_or_create(
        name="aider", defaults={"argv": before, "prompt_via": "file", "output_format": ""}
    )
    AgentType.objects.update_or_create(
        name="my-aider", defaults={"argv": before, "prompt_via": "file", "output_format": ""}
    )
    AIDER_TEXT_MIGRATION.aider_text(apps, None)
    assert AgentType.objects.get(name="aider").output_format == "aider-text"
    assert AgentType.objects.get(name="aider").argv == shipped["argv"], "commits left to Spawner"
    assert "--no-auto-commits" in shipped["argv"]
    assert AgentType.objects.get(name="my-aider").output_format == ""

    AgentType.objects.filter(name="aider").update(argv=["aider", "--model", "mine", "--message-file", "{prompt_file}"])
    AgentType.objects.filter(name="aider").update(output_format="")
    AIDER_TEXT_MIGRATION.aider_text(apps, None)
    assert AgentType.objects.get(name="aider").output_format == "", "an admin's argv: left as it is"
