"""Install the preset agent types and roles, and show which agent types this server can run."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from spawner import presets
from spawner.core.words import plural
from spawner.models import AgentType, Role


class Command(BaseCommand):
    help = "Create missing preset agent types and roles; list agent types with their availability."

    def handle(self, *args, **options):
        types, roles = presets.install(AgentType, Role)
        self.stdout.write(f"created {plural(types, 'agent type')} and {plural(roles, 'role')}")
        for agent_type in AgentType.objects.all():
            state = "available" if agent_type.available else f"not available: {agent_type.unavailable_reason}"
            admin = " (admins only)" if agent_type.admin_only else ""
            self.stdout.write(f"  {agent_type.name:<12} {' '.join(agent_type.argv):<40} {state}{admin}")
