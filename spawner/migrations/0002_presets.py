from django.db import migrations


def install_presets(apps, schema_editor):
    from spawner import presets

    presets.install(apps.get_model("spawner", "AgentType"), apps.get_model("spawner", "Role"))


class Migration(migrations.Migration):
    dependencies = [("spawner", "0001_initial")]
    operations = [migrations.RunPython(install_presets, migrations.RunPython.noop)]
