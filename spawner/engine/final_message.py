"""An agent's final message as its result, when it wrote no SPAWNER_RESULT_FILE.

Coding-agent CLIs in their JSON output mode (the agent type's ``output_format``) print
their last message in a form ``spawner.core.agent_output`` reads from the attempt's log.
"""

from __future__ import annotations

from pathlib import Path

from spawner.core import agent_output

READ_MAX_BYTES = 8_000_000  # the end of the log: the CLI prints its result last


def parsed_log(output_format: str, log_path: Path) -> agent_output.AgentOutput | None:
    """What the CLI printed in its JSON output mode, read from the end of the attempt's log."""
    if not output_format:
        return None
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - READ_MAX_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return agent_output.parse(output_format, text)


def result_from_log(output_format: str, log_path: Path) -> dict | None:
    """The run's result from the final message in its log, or None (no format, no message)."""
    output = parsed_log(output_format, log_path)
    if output is None or not (output.final_message or "").strip():
        return None
    return agent_output.result_from_message(output.final_message, output.usage)
