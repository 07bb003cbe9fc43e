from __future__ import annotations

from django.contrib import admin

from spawner.models import AgentRun, AgentType, Batch, Role, RunAttempt, RunEvent, WebhookDelivery


@admin.register(AgentType)
class AgentTypeAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "description",
        "available",
        "prompt_kind",
        "output_format",
        "admin_only",
        "max_concurrency",
        "enabled",
    ]
    list_filter = ["enabled", "admin_only"]

    @admin.display(boolean=True)
    def available(self, obj: AgentType) -> bool:
        return obj.available


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ["name"]


class AgentRunInline(admin.TabularInline):
    model = AgentRun
    fields = ["key", "agent_type", "priority", "status", "attempt", "duration_seconds"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "mode", "status", "launched_at", "wall_seconds", "speedup"]
    list_filter = ["status", "mode"]
    inlines = [AgentRunInline]
    readonly_fields = [f.name for f in Batch._meta.fields]


class RunAttemptInline(admin.TabularInline):
    model = RunAttempt
    fields = ["number", "status", "started_at", "finished_at", "exit_code", "error", "host"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(AgentRun)
class AgentRunAdmin(admin.ModelAdmin):
    list_display = ["id", "batch", "key", "agent_type", "priority", "status", "attempt"]
    list_filter = ["status", "agent_type"]
    inlines = [RunAttemptInline]
    readonly_fields = [f.name for f in AgentRun._meta.fields]


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ["id", "batch", "run", "attempt", "kind", "status", "actor", "created_at"]
    list_filter = ["kind"]
    readonly_fields = [f.name for f in RunEvent._meta.fields]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Read-only: the record of each webhook call, refused ones with their reason."""

    list_display = ["id", "batch", "event", "url", "state", "attempts", "last_status", "next_attempt_at"]
    list_filter = ["state", "event"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
