from django.db import migrations, models

# Frozen here: the aider preset's argv before and after (spawner/presets.py may change later).
AIDER_ARGV = ["aider", "--yes-always", "--no-pretty", "--no-check-update", "--message-file", "{prompt_file}"]
AIDER_ARGV_NOW = [*AIDER_ARGV[:4], "--no-auto-commits", *AIDER_ARGV[4:]]


def aider_text(apps, schema_editor):
    """The aider preset reads aider's printed token and cost lines, and leaves commits to Spawner:
    set on rows that still hold the preset as shipped with no output format; an admin's edit is
    never overwritten."""
    AgentType = apps.get_model("spawner", "AgentType")
    AgentType.objects.filter(name="aider", argv=AIDER_ARGV, prompt_via="file", output_format="").update(
        output_format="aider-text", argv=AIDER_ARGV_NOW
    )


def plain_text(apps, schema_editor):
    AgentType = apps.get_model("spawner", "AgentType")
    AgentType.objects.filter(name="aider", argv=AIDER_ARGV_NOW, output_format="aider-text").update(
        output_format="", argv=AIDER_ARGV
    )


class Migration(migrations.Migration):
    dependencies = [
        ("spawner", "0021_clusters"),
    ]

    operations = [
        migrations.AlterField(
            model_name="agenttype",
            name="output_format",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "plain text (no final message is read)"),
                    ("claude-json", "Claude Code --output-format json"),
                    ("codex-jsonl", "codex exec --json"),
                    ("gemini-json", "Gemini CLI --output-format json"),
                    ("aider-text", "aider's printed Tokens / Cost lines (text)"),
                ],
                default="",
                help_text="How to read the agent's output: with a JSON output mode, its final message becomes the "
                "run's result when it wrote no SPAWNER_RESULT_FILE (a fenced ```json block in it, or the text as "
                "the summary).",
                max_length=16,
            ),
        ),
        migrations.RunPython(aider_text, plain_text),
    ]
