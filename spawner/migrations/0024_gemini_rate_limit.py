from django.db import migrations

# Frozen here: the gemini preset's rate-limit pattern before and after it was checked against the
# real Gemini CLI 0.61.0 (spawner/presets.py may change later). Its JSON error names the 429
# whatever the API's message said ("Resource has been exhausted" matched none of the old ones).
BEFORE = (
    r"RESOURCE_EXHAUSTED|\b429\b[^\n]{0,40}(?:resource exhausted|too many requests)|"
    r"exhausted your capacity|exceeded your current quota"
)
AFTER = r'"code":\s*429\b|' + BEFORE


def gemini_429(apps, schema_editor):
    """On the gemini row that still holds the pattern as shipped: an admin's own is left alone."""
    AgentType = apps.get_model("spawner", "AgentType")
    AgentType.objects.filter(name="gemini", rate_limit_pattern=BEFORE).update(rate_limit_pattern=AFTER)


def gemini_documented(apps, schema_editor):
    AgentType = apps.get_model("spawner", "AgentType")
    AgentType.objects.filter(name="gemini", rate_limit_pattern=AFTER).update(rate_limit_pattern=BEFORE)


class Migration(migrations.Migration):
    dependencies = [
        ("spawner", "0023_clirate_rate_limits"),
    ]

    operations = [
        migrations.RunPython(gemini_429, gemini_documented),
    ]
