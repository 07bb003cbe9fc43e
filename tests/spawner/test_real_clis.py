"""The coding-agent presets with the real Claude Code, Codex, Gemini and aider CLIs (`make agents`), a
real cluster, and a scripted model server: the CLIs really edit files, the prompt is never an
option, the final message becomes the run's result, writes outside the run's directory are
refused, and a 429 the CLI gave up on is a rate limit. Without the CLIs these tests skip (they
fail with CI=true)."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest

from spawner import presets
from spawner.models import AgentRun, AgentType, Aggregation, ModelPrice, Role
from tests.spawner.helpers import launch, wait_batch
from tests.support import clis
from tests.support import model_server as ms

pytestmark = [pytest.mark.integration, pytest.mark.real_cli, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
TODAY = datetime.date(2026, 11, 26)
# A prompt that starts like an option: the old presets passed it as argv and `claude -p "--version"`
# printed the version instead of asking the model.
DASH_PROMPT = "--version is not what I want: put a greeting in hello.txt"


@pytest.fixture
def claude():
    return clis.require("claude")  # before the cluster starts: a missing CLI skips at once


@pytest.fixture
def codex():
    return clis.require("codex")


@pytest.fixture
def gemini():
    return clis.require("gemini")


@pytest.fixture
def aider():
    return clis.require("aider")


@pytest.fixture
def server():
    with ms.ModelServer() as s:
        yield s


def one_task(agent: str, prompt: str) -> str:
    head = f"name: real {agent}\nagent: {agent}\ntimeout: 120\nretries: 0\n"
    return head + f"tasks:\n  - key: edit\n    prompt: {json.dumps(prompt)}\n"


def agent_requests_of(server, api):
    found = server.agent_requests(api)
    assert found, f"the CLI sent the scripted server no {api} request with tools: {server.requests!r:.2000}"
    return found


def test_claude_code_edits_its_directory_only_and_its_final_message_is_the_result(claude, cluster, server, tmp_path):
    clis.install_claude(server, tmp_path / "home")
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    outside = tmp_path / "outside.txt"
    server.script(
        [
            ms.tools(ms.claude_edit(str(repo / "hello.txt"), "hello", "hello, world")),
            ms.tools(ms.claude_write(str(repo / "notes" / "new.txt"), "written by claude\n")),
            ms.tools(ms.claude_write(str(outside), "escaped\n")),
            ms.tools(ms.claude_bash(f"touch {outside}")),
            ms.text("Greeted the world in hello.txt."),
        ]
    )

    batch = wait_batch(launch(one_task("claude-code", DASH_PROMPT), repo), timeout=150)

    run = AgentRun.objects.get(batch=batch)
    assert batch.status == "succeeded", run.output_tail
    assert (repo / "hello.txt").read_text() == "hello, world\n"
    assert (repo / "notes" / "new.txt").read_text() == "written by claude\n"
    assert not outside.exists(), "a write outside the run's directory was refused (Write and Bash)"
    first = agent_requests_of(server, "anthropic")[0]
    assert first.first_user_text().rstrip().endswith(DASH_PROMPT), "the prompt reached the model as the prompt"
    assert "--output-format" not in run.output_tail or '"type":"result"' in run.output_tail
    clis.record(run, "claude-code.text")
    assert run.result["summary"] == "Greeted the world in hello.txt."
    assert run.result["tokens"] > 0 and run.result["cost"] >= 0, "the CLI's usage, as the documented fields"
    denied = [r for r in server.agent_requests("anthropic") if "outside the working directories" in r.prompt_text()]
    assert denied, "claude said why the Bash write outside was refused"


def test_codex_edits_its_directory_only_and_its_final_message_is_the_result(codex, cluster, server, tmp_path):
    clis.install_codex(server, tmp_path / "codex-home")
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    outside = tmp_path / "outside.txt"
    patch = "*** Begin Patch\n*** Update File: hello.txt\n@@\n-hello\n+hello, world\n*** End Patch\n"
    server.script(
        [
            ms.tools(ms.codex_patch(patch)),
            ms.tools(ms.codex_shell("mkdir -p notes && echo 'written by codex' > notes/new.txt")),
            ms.tools(ms.codex_shell(f"echo escaped > {outside}")),
            ms.text('Greeted the world.\n```json\n{"summary": "greeted", "verdict": "pass", "findings": []}\n```'),
        ]
    )

    batch = wait_batch(launch(one_task("codex", DASH_PROMPT), repo), timeout=150)

    run = AgentRun.objects.get(batch=batch)
    assert batch.status == "succeeded", run.output_tail
    assert (repo / "hello.txt").read_text() == "hello, world\n"
    assert (repo / "notes" / "new.txt").read_text() == "written by codex\n"
    assert not outside.exists(), "the sandbox refused a write outside the run's directory"
    requests = agent_requests_of(server, "openai")
    assert requests[0].first_user_text().rstrip().endswith(DASH_PROMPT)
    outputs = requests[-1].prompt_text()
    assert "Read-only file system" in outputs or "Permission denied" in outputs
    clis.record(run, "codex.fenced")
    assert run.result["summary"] == "greeted" and run.result["verdict"] == "pass"
    assert run.result["tokens"] > 0


def test_claude_code_rate_limited_waits_and_succeeds_without_spending_a_retry(claude, cluster, server, tmp_path):
    agent_type = clis.install_claude(server, tmp_path / "home")
    agent_type.env = {**agent_type.env, "CLAUDE_CODE_MAX_RETRIES": "0"}  # give up at the first 429
    agent_type.save()
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    # Claude Code puts the API's message in its result, so a delay the message advises is taken
    # (Anthropic's own message advises none: then the wait is 30 s, too long for a test).
    server.rate_limit("anthropic", times=1, retry_after="7", message="Rate limited. Please try again in 1s.")
    server.script([ms.text("Fine now.")])

    batch = wait_batch(launch(one_task("claude-code", "say hello"), repo), timeout=60)

    run = AgentRun.objects.get(batch=batch)
    assert batch.status == "succeeded", run.output_tail
    assert server.rate_limited == 1
    first, second = run.attempts.order_by("number")
    assert first.status == "rate_limited" and first.error == "rate limited: exit code 1, retry after 1 s", first.error
    assert second.status == "succeeded" and run.result["summary"] == "Fine now."
    assert (second.started_at - first.finished_at).total_seconds() >= 0.9
    assert run.retries == 0 and not batch.escalations.exists(), "the wait spent no retry (retries: 0)"


def test_gemini_edits_its_directory_only_and_its_final_message_and_usage_are_the_result(
    gemini, cluster, server, tmp_path
):
    clis.install_gemini(server, tmp_path / "gemini-home")
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    outside = tmp_path / "outside.txt"
    server.script(
        [
            ms.tools(ms.gemini_replace("hello.txt", "hello", "hello, world")),
            ms.tools(ms.gemini_write("notes/new.txt", "written by gemini\n")),
            ms.tools(ms.gemini_write(str(outside), "escaped\n")),
            ms.tools(ms.call("run_shell_command", {"command": f"touch {outside}"})),
            ms.text('Greeted the world.\n\n```json\n{"summary": "greeted", "verdict": "pass"}\n```'),
        ]
    )

    batch = wait_batch(launch(one_task("gemini", DASH_PROMPT), repo), timeout=150)

    run = AgentRun.objects.get(batch=batch)
    assert batch.status == "succeeded", run.output_tail
    assert (repo / "hello.txt").read_text() == "hello, world\n"
    assert (repo / "notes" / "new.txt").read_text() == "written by gemini\n"
    assert not outside.exists(), "a write outside the run's directory was refused (and no shell tool offered)"
    requests = agent_requests_of(server, "gemini")
    assert requests[0].first_user_text().rstrip().endswith(DASH_PROMPT), "the prompt reached the model as the prompt"
    said = requests[-1].prompt_text()
    assert "Path not in workspace" in said and 'Tool "run_shell_command" not found' in said
    clis.record(run, "gemini.text")
    # The router's question (no tools) went to a second model: each model's tokens, as the CLI counted.
    usage = run.attempts.get().usage
    assert usage["source"] == "cli" and len(usage["models"]) == 2, usage
    assert {m for m in usage["per_model"]} == set(usage["models"])
    assert usage["input_tokens"] > 0 and usage["cache_read_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["cost_usd"] is None and "no price for model" in usage["cost_note"], "not in the seeded table"
    assert run.result == {
        "summary": "greeted",
        "verdict": "pass",
        "tokens": usage["input_tokens"] + usage["output_tokens"] + usage["cache_read_tokens"],
    }


def test_gemini_rate_limited_waits_and_succeeds_without_spending_a_retry(gemini, cluster, server, tmp_path):
    # One attempt of its own (settings.json's general.maxAttempts), a model named (no router request).
    clis.install_gemini(server, tmp_path / "gemini-home", model=ms.GEMINI_MODEL, max_attempts=1)
    ModelPrice.objects.update_or_create(
        model=ms.GEMINI_MODEL,
        defaults={"input_per_mtok": 1.25, "output_per_mtok": 10, "cache_read_per_mtok": 0.31, "entered_on": TODAY},
    )
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    # The API's per-minute quota error with its RetryInfo: Gemini CLI prints "Suggested retry after 1s."
    server.rate_limit("gemini", times=1, retry_after="1")
    server.script([ms.text("Fine now.")])

    batch = wait_batch(launch(one_task("gemini", "say hello"), repo), timeout=60)

    run = AgentRun.objects.get(batch=batch)
    assert batch.status == "succeeded", run.output_tail
    assert server.rate_limited == 1
    first, second = run.attempts.order_by("number")
    # Gemini CLI exits with its error's code, 429, which the OS cuts to 429 % 256.
    assert first.status == "rate_limited" and first.error == "rate limited: exit code 173, retry after 1 s", first.error
    assert second.status == "succeeded" and run.result["summary"] == "Fine now."
    assert second.usage["models"] == [ms.GEMINI_MODEL] and second.usage["cost_usd"] > 0, "the seeded price"
    assert run.retries == 0 and not batch.escalations.exists(), "the wait spent no retry (retries: 0)"


def test_aider_edits_and_its_answer_and_printed_usage_are_the_result(aider, cluster, server, tmp_path):
    clis.install_aider(server, tmp_path / "aider-home")
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    server.chat(
        "Greeting the world.\n\nhello.txt\n```\n<<<<<<< SEARCH\nhello\n=======\nhello, world\n>>>>>>> REPLACE\n```\n\n"
        '```json\n{"summary": "greeted", "verdict": "pass"}\n```\n'
    )

    batch = wait_batch(launch(one_task("aider", DASH_PROMPT), repo), timeout=150)

    run = AgentRun.objects.get(batch=batch)
    assert batch.status == "succeeded", run.output_tail
    assert (repo / "hello.txt").read_text() == "hello, world\n"
    request = server.chat_requests()[0]
    assert DASH_PROMPT in json.dumps(request.body["messages"]), "the prompt file reached the model as the prompt"
    usage = run.attempts.get().usage
    assert usage["source"] == "cli" and usage["models"] == ["openai/gpt-4o"] and usage["turns"] == 1
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["cost_usd"] > 0, usage
    assert run.result == {
        "summary": "greeted",
        "verdict": "pass",
        "tokens": usage["input_tokens"] + usage["output_tokens"],
        "cost": usage["cost_usd"],
    }


REVIEW_FINDING = {"severity": "high", "title": "prompt reaches an option", "file": "spawner/presets.py", "line": 5}


def _write_result(result: dict):
    """What a model does with the role's instruction and the result file named in its system prompt."""
    return lambda request: ms.tools(ms.claude_write(request.result_file(), json.dumps(result)))


def _fenced(result: dict) -> ms.Turn:
    return ms.text(f"Reviewed.\n\n```json\n{json.dumps(result, indent=1)}\n```")


def test_claude_review_example_hands_back_structured_findings(claude, cluster, server, tmp_path):
    presets.install(AgentType, Role)  # the roles as shipped (a transactional test starts empty)
    clis.install_claude(server, tmp_path / "home")
    repo = clis.git_repo(tmp_path / "repo", {"README.md": "spawner\n"})
    spec = (ROOT / "examples" / "claude-review.yaml").read_text().replace("cwd: ..", f"cwd: {repo}")
    security = {"summary": "one injection risk", "verdict": "warn", "findings": [REVIEW_FINDING]}
    correctness = {
        "summary": "one race",
        "verdict": "warn",
        "findings": [{"severity": "medium", "title": "double dispatch", "file": "spawner/engine/dispatch.py"}],
    }
    tests_found = {"summary": "a gap", "findings": [{"severity": "low", "title": "no test for limits"}]}
    synthesis = {"summary": "fix the option first", "verdict": "warn", "findings": [REVIEW_FINDING]}
    server.script([_write_result(security), ms.text("Written to the result file.")], when="Task (security)")
    server.script([_fenced(correctness)], when="Task (correctness)")
    server.script([_fenced(tests_found)], when="Task (tests)")
    server.script([_write_result(synthesis), ms.text("Done.")], when="Combine these three reviews")

    batch = wait_batch(launch(spec, repo), timeout=170)

    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert batch.status == "succeeded", {k: r.output_tail[-500:] for k, r in runs.items()}
    clis.record(runs["correctness"], "claude-code.fenced")
    clis.record(runs["security"], "claude-code.result-file")
    assert runs["security"].result == security, "written with the Write tool to SPAWNER_RESULT_FILE"
    assert runs["correctness"].result["findings"] == correctness["findings"], "taken from the fenced block"
    assert runs["synthesis"].result == synthesis
    synthesis_prompt = next(r for r in server.agent_requests("anthropic") if "Combine these" in r.first_user_text())
    assert "one injection risk" in synthesis_prompt.first_user_text(), "the synthesis saw its dependencies' summaries"
    role_prompt = next(r for r in server.agent_requests("anthropic") if "Task (security)" in r.first_user_text())
    assert "SPAWNER_RESULT_FILE" in role_prompt.first_user_text(), "the role says how to hand back findings"
    merged = Aggregation.objects.get(batch=batch).data
    assert len(merged["findings"]) >= 3, merged


def _working_directory(request) -> str:
    """Where Claude Code runs, as its system prompt tells the model (a worktree's path is not known
    before the run starts)."""
    found = re.search(r"[Ww]orking directory: (\S+)", request.system_text() + "\n" + request.prompt_text())
    assert found, "claude's prompt names its working directory"
    return found.group(1)


def test_real_clis_in_worktrees_edit_in_isolation_and_their_work_is_merged(claude, codex, cluster, server, tmp_path):
    from spawner.models import MergeStep
    from tests.spawner.helpers import wait_for
    from tests.spawner.test_workspaces import checkout_state, git

    clis.install_claude(server, tmp_path / "home")
    clis.install_codex(server, tmp_path / "codex-home")
    repo = clis.git_repo(tmp_path / "repo", {"hello.txt": "hello\n"})
    before = checkout_state(repo)
    server.script(
        [
            lambda r: ms.tools(ms.claude_write(_working_directory(r) + "/from_claude.txt", "claude was here\n")),
            ms.text("Wrote from_claude.txt."),
        ],
        when="claude task",
    )
    patch = "*** Begin Patch\n*** Add File: from_codex.txt\n+codex was here\n*** End Patch\n"
    server.script([ms.tools(ms.codex_patch(patch)), ms.text("Added from_codex.txt.")], when="codex task")
    spec = (
        f"name: real clis in worktrees\ntimeout: 120\nworkspace:\n  repo: {repo}\n  merge: sequential\n"
        "tasks:\n"
        f"  - {{key: claude, agent: claude-code, files: [from_claude.txt], prompt: {json.dumps('--claude task')}}}\n"
        "  - {key: codex, agent: codex, files: [from_codex.txt], prompt: 'codex task'}\n"
    )

    batch = wait_batch(launch(spec, repo), timeout=170)

    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert batch.status == "succeeded", {k: (r.error, r.output_tail[-500:]) for k, r in runs.items()}
    assert [f["path"] for f in runs["claude"].changes["files"]] == ["from_claude.txt"]
    assert [f["path"] for f in runs["codex"].changes["files"]] == ["from_codex.txt"]
    wait_for(
        lambda: set(MergeStep.objects.filter(batch=batch).values_list("state", flat=True)) == {"merged"},
        60,
        "both runs merged",
    )
    branch = f"spawner/{batch.id}/integration"
    assert git(repo, "show", f"{branch}:from_claude.txt") == "claude was here\n"
    assert git(repo, "show", f"{branch}:from_codex.txt") == "codex was here\n"
    assert not (repo / "from_claude.txt").exists() and not (repo / "from_codex.txt").exists()
    assert checkout_state(repo) == before
