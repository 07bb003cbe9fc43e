"""The engine: the only code that writes run, attempt, batch and escalation state."""
