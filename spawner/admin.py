from __future__ import annotations

import json
import re
import shutil

from django import forms
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

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LinesField(forms.CharField):
    """A list of strings, one a line (blank lines dropped); a JSON list is taken as is (for an argument
    that holds a line break)."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false"})

    def prepare_value(self, value):
        if isinstance(value, list):
            return json.dumps(value) if any("\n" in str(v) for v in value) else "\n".join(str(v) for v in value)
        return value

    def to_python(self, value):
        text = (value or "").strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(f"{self.label}: not a JSON list ({exc.msg}, column {exc.colno}).") from exc
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise forms.ValidationError(f"{self.label}: a JSON list of strings, or one item a line.")
            return items
        return [line.strip() for line in text.splitlines() if line.strip()]


class NamesField(LinesField):
    """Environment variable names, one a line or separated by commas."""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 60, "spellcheck": "false"})

    def to_python(self, value):
        names = [n for line in super().to_python(value) for n in re.split(r"[,\s]+", line) if n]
        bad = [n for n in names if not ENV_NAME.match(n)]
        if bad:
            raise forms.ValidationError(
                f"{self.label}: {', '.join(map(repr, bad))} is not a variable name (letters, digits, _)."
            )
        return names


class EnvField(LinesField):
    """Environment variables as NAME=value, one a line."""

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{k}={v}" for k, v in value.items())
        return value

    def to_python(self, value):
        text = (value or "").strip()
        if text.startswith("{"):
            try:
                env = json.loads(text)
            except json.JSONDecodeError as exc:
                why = f"{exc.msg}, column {exc.colno}"
                raise forms.ValidationError(f"{self.label}: not a JSON object ({why}).") from exc
            if not isinstance(env, dict) or not all(ENV_NAME.match(k) and isinstance(v, str) for k, v in env.items()):
                raise forms.ValidationError(f"{self.label}: NAME=value lines, or a JSON object of strings.")
            return env
        env = {}
        for number, line in enumerate((value or "").splitlines(), 1):
            if not line.strip():
                continue
            name, sep, val = line.partition("=")
            name = name.strip()
            if not sep or not ENV_NAME.match(name):
                raise forms.ValidationError(f"{self.label}, line {number}: write NAME=value (got {line.strip()!r}).")
            env[name] = val
        return env


class CodesField(forms.CharField):
    """Exit codes: integers separated by commas or spaces."""

    def prepare_value(self, value):
        return ", ".join(str(c) for c in value) if isinstance(value, list) else value

    def to_python(self, value):
        codes = []
        for part in re.split(r"[,\s]+", (value or "").strip().strip("[]")):
            if not part:
                continue
            try:
                code = int(part)
            except ValueError:
                raise forms.ValidationError(f"{self.label}: {part!r} is not a whole number.") from None
            if not 0 <= code <= 255:
                raise forms.ValidationError(f"{self.label}: {code} is not an exit code (0 to 255).")
            codes.append(code)
        return codes


class SchemaField(forms.JSONField):
    """A JSON schema, empty when there is none (not the word null)."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class AgentTypeForm(forms.ModelForm):
    response_schema = SchemaField(
        label="Response schema",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "spellcheck": "false"}),
        help_text="Model: a JSON schema for structured output; the parsed answer becomes the run's result. "
        'Empty: the answer is the result\'s "summary".',
    )
    argv = LinesField(
        label="Command (argv)",
        required=False,
        help_text="One argument a line, the program first, e.g. claude / -p / {prompt}. Placeholders: {prompt}, "
        "{prompt_file}, {result_file}, {key}. Never run through a shell. A JSON list also works.",
    )
    env = EnvField(label="Environment", required=False, help_text="Extra variables, NAME=value, one a line.")
    secret_names = NamesField(
        label="Secret names",
        required=False,
        help_text="Names of server environment variables passed through at spawn time (values never stored), "
        "one a line or separated by commas.",
    )
    success_exit_codes = CodesField(label="Success exit codes", required=False, help_text="e.g. 0, 1 (empty: 0 only).")
    rate_limit_exit_codes = CodesField(
        label="Rate-limit exit codes", required=False, help_text="Exit codes that mean a rate limit, e.g. 75."
    )

    class Meta:
        model = AgentType
        fields = "__all__"

    def clean_argv(self):
        argv = self.cleaned_data["argv"]
        if argv and self.cleaned_data.get("kind", "command") == "command" and not argv[0].strip():
            raise forms.ValidationError("Command (argv): the first line is the program to run.")
        return argv


def availability(obj: AgentType) -> str:
    """Whether this server can run the type now, and why not."""
    if obj.available:
        if obj.is_model:
            return f"available: {obj.model} at {obj.base_url}"
        return f"available: {shutil.which(obj.executable)}"
    return f"not available: {obj.unavailable_reason}"


@admin.register(AgentType)
class AgentTypeAdmin(admin.ModelAdmin):
    form = AgentTypeForm
    readonly_fields = ["availability"]
    list_display = [
        "name",
        "description",
        "kind",
        "available",
        "availability",
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
        (None, {"fields": ["name", "description", "kind", "enabled", "admin_only", "availability"]}),
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

    @admin.display(description="Availability")
    def availability(self, obj: AgentType) -> str:
        return availability(obj) if obj.pk else "saved types say whether this server can run them"


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ["name"]


class RecordAdmin(admin.ModelAdmin):
    """What the engine wrote: shown, never added, changed or deleted here (the engine's transitions and
    their events are the only writers; a row made here would bypass them)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AgentRunInline(admin.TabularInline):
    model = AgentRun
    fields = ["key", "agent_type", "priority", "status", "attempt", "duration_seconds"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Batch)
class BatchAdmin(RecordAdmin):
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

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AgentRun)
class AgentRunAdmin(RecordAdmin):
    list_display = ["id", "batch", "key", "agent_type", "priority", "status", "attempt", "cost_usd"]
    list_filter = ["status", "agent_type"]
    inlines = [RunAttemptInline]
    readonly_fields = [f.name for f in AgentRun._meta.fields]


@admin.register(RunAttempt)
class RunAttemptAdmin(RecordAdmin):
    list_display = ["id", "run", "number", "status", "host", "started_at", "finished_at", "exit_code"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in RunAttempt._meta.fields]


@admin.register(RunEvent)
class RunEventAdmin(RecordAdmin):
    list_display = ["id", "batch", "run", "attempt", "kind", "status", "actor", "created_at"]
    list_filter = ["kind"]
    readonly_fields = [f.name for f in RunEvent._meta.fields]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(RecordAdmin):
    """Read-only: the record of each webhook call, refused ones with their reason."""

    list_display = ["id", "batch", "event", "url", "state", "attempts", "last_status", "next_attempt_at"]
    list_filter = ["state", "event"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]


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
