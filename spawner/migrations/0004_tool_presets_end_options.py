from django.db import migrations

CHANGES = {
    "pytest": (["pytest", "-q", "{prompt}"], ["pytest", "-q", "--", "{prompt}"]),
    "ruff": (["ruff", "check", "{prompt}"], ["ruff", "check", "--", "{prompt}"]),
}


def end_options(apps, schema_editor):
    """A prompt for pytest or ruff is a path, never an option: `--` before it.
    Only presets an admin has not changed are updated."""
    agent_type = apps.get_model("spawner", "AgentType")
    for name, (old, new) in CHANGES.items():
        agent_type.objects.filter(name=name, argv=old).update(argv=new)


class Migration(migrations.Migration):
    dependencies = [("spawner", "0003_fanin")]
    operations = [migrations.RunPython(end_options, migrations.RunPython.noop)]
