from django.db import migrations

# Frozen here: what each coding CLI prints when its API answered 429 and it gave up
# (spawner/presets.py may change later).
PATTERNS = {
    "claude-code": r'"api_error_status":\s*429\b|API Error: Request rejected \(429\)',
    "codex": r'"message":\s*"exceeded retry limit, last status: 429',
    "gemini": (
        r"RESOURCE_EXHAUSTED|\b429\b[^\n]{0,40}(?:resource exhausted|too many requests)|"
        r"exhausted your capacity|exceeded your current quota"
    ),
    "aider": r"litellm\.RateLimitError|The API provider has rate limited you",
}


def cli_rate_limits(apps, schema_editor):
    """The coding-agent presets' rate-limit patterns, on rows that still have none (no pattern, no
    exit codes): an admin's own rate-limit settings are never overwritten."""
    AgentType = apps.get_model("spawner", "AgentType")
    for row in AgentType.objects.filter(name__in=list(PATTERNS), rate_limit_pattern=""):
        if not row.rate_limit_exit_codes:
            row.rate_limit_pattern = PATTERNS[row.name]
            row.save(update_fields=["rate_limit_pattern"])


def no_rate_limits(apps, schema_editor):
    AgentType = apps.get_model("spawner", "AgentType")
    for name, pattern in PATTERNS.items():
        AgentType.objects.filter(name=name, rate_limit_pattern=pattern).update(rate_limit_pattern="")


class Migration(migrations.Migration):
    dependencies = [
        ("spawner", "0022_clirate"),
    ]

    operations = [
        migrations.RunPython(cli_rate_limits, no_rate_limits),
    ]
