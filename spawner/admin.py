from __future__ import annotations

from django.contrib import admin

from spawner.models import (
    AgentRun,
    AgentType,
    Batch,
    ModelPrice,
    Role,
    RunAttempt,
    RunEvent,
    UserBudget,
    WebhookDelivery,
)


@admin.register(AgentType)
class AgentTypeAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "description",
        "kind",
        "available",
        "prompt_kind",
        "output_format",
        "admin_only",
        "max_concurrency",
        "enabled",
    ]
    list_filter = ["enabled", "admin_only", "kind"]
    # Every field shows, grouped by kind; AgentType.clean refuses what a kind lacks (a model type
    # without a base URL or a model, a command type without argv) and adds the API key's secret name.
    fieldsets = [
        (None, {"fields": ["name", "description", "kind", "enabled", "admin_only"]}),
        (
            "Command agents",
            {
                "fields": ["argv", "prompt_via", "prompt_kind", "output_format", "success_exit_codes", "env"],
                "description": "For kind = command: the process to run.",
            },
        ),
        (
            "Model agents",
            {
                "fields": [
                    "base_url",
                    "model",
                    "api_key_secret",
                    "system_prompt",
                    "temperature",
                    "max_tokens",
                    "response_schema",
                ],
                "description": "For kind = model: one streamed call to an OpenAI-compatible chat-completions "
                "endpoint (vLLM, Ollama, llama.cpp's server, hosted APIs). Base URL and model are required.",
            },
        ),
        ("Secrets", {"fields": ["secret_names"]}),
        (
            "Limits",
            {
                "fields": [
                    "default_timeout",
                    "max_concurrency",
                    "spawn_stagger_seconds",
                    "requests_per_minute",
                    "tokens_per_minute",
                    "rate_limit_pattern",
                    "rate_limit_exit_codes",
                ],
                "description": "A run that hits a rate limit (HTTP 429 for a model; the pattern or an exit code "
                "for a command) waits the advised delay and runs again without spending a retry.",
            },
        ),
    ]

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
    list_display = ["id", "batch", "key", "agent_type", "priority", "status", "attempt", "cost_usd"]
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


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """The price table: USD per million tokens. Prices change: check them against the provider's page."""

    list_display = [
        "model",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
        "entered_on",
        "note",
    ]
    search_fields = ["model"]


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    list_display = ["user", "daily_usd", "note"]
    autocomplete_fields = ["user"]
