from __future__ import annotations

from django.apps import AppConfig


class SpawnerConfig(AppConfig):
    name = "spawner"
    verbose_name = "Spawner"
