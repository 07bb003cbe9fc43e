from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("spawner", "0016_templates")]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="webhook_format",
            field=models.CharField(
                default="json",
                help_text='The webhook body: "json" (the event) or "slack" ({"text": ...}).',
                max_length=8,
            ),
        ),
    ]
