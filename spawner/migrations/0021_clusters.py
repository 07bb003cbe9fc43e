from django.db import migrations, models


def name_existing(apps, schema_editor):
    """Clusters beating while this runs keep their old name, host:pid."""
    WorkerHeartbeat = apps.get_model("spawner", "WorkerHeartbeat")
    for row in WorkerHeartbeat.objects.filter(name=""):
        row.name = f"{row.host}:{row.pid}"
        row.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [
        ("spawner", "0020_logs"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerheartbeat",
            name="name",
            field=models.CharField(default="", help_text="SPAWNER_CLUSTER_NAME, or host:pid.", max_length=200),
            preserve_default=False,
        ),
        migrations.RunPython(name_existing, migrations.RunPython.noop),
        migrations.AddField(
            model_name="workerheartbeat",
            name="version",
            field=models.CharField(blank=True, help_text="Spawner's version and git commit.", max_length=100),
        ),
        migrations.AddField(
            model_name="workerheartbeat",
            name="busy",
            field=models.PositiveIntegerField(default=0, help_text="Attempts running in this cluster."),
        ),
        migrations.AddField(
            model_name="workerheartbeat",
            name="state",
            field=models.CharField(
                choices=[("starting", "Starting"), ("running", "Running"), ("draining", "Draining")], default="running", max_length=10
            ),
        ),
        migrations.AddField(
            model_name="workerheartbeat",
            name="drain_requested_at",
            field=models.DateTimeField(blank=True, help_text="An admin asked it to drain.", null=True),
        ),
        migrations.AddField(
            model_name="workerheartbeat",
            name="drain_requested_by",
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.AlterField(
            model_name="workerheartbeat",
            name="seen_at",
            field=models.DateTimeField(help_text="Its last heartbeat."),
        ),
        migrations.AlterModelOptions(name="workerheartbeat", options={"ordering": ["name"]}),
        migrations.AddConstraint(
            model_name="workerheartbeat",
            constraint=models.UniqueConstraint(fields=("name",), name="unique_cluster_name"),
        ),
        migrations.AddField(
            model_name="runattempt",
            name="cluster",
            field=models.CharField(blank=True, help_text="The name of the cluster that ran it.", max_length=200),
        ),
        migrations.AlterField(
            model_name="runattempt",
            name="held_by",
            field=models.CharField(
                blank=True, help_text="The name of the cluster whose queue holds this queued attempt.", max_length=220
            ),
        ),
    ]
