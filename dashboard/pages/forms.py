"""Forms: the new-batch form (batch fields, task rows, or a pasted spec), reviews and escalations.

The spec is validated by `spawner.services.spec_load` alone; these forms only
collect input and put each of its errors back next to the field it names. Likewise
the fan-in forms check the shape of a post; the rules (a dismissal needs a reason)
are the engine's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

import yaml
from django import forms

from spawner import selectors
from spawner.errors import FieldError
from spawner.models import Review
from spawner.states import FailurePolicy, Mode, Priority, Strategy

SPEC_MAX_BYTES = selectors.SPEC_LIMITS["spec_bytes"]
MAX_DEPENDENCIES = 1000


def _choices(values) -> list[tuple[str, str]]:
    return [(v, v.replace("_", " ")) for v in values]


class BatchForm(forms.Form):
    name = forms.CharField(max_length=200)
    mode = forms.ChoiceField(choices=_choices(Mode.values), initial=Mode.PARALLEL)
    max_parallel = forms.IntegerField(min_value=1, initial=3, label="Max parallel")
    retries = forms.IntegerField(min_value=0, initial=0, help_text="Automatic retries per task.")
    timeout = forms.IntegerField(min_value=1, required=False, help_text="Seconds per task.")
    failure_policy = forms.ChoiceField(choices=_choices(FailurePolicy.values), initial=FailurePolicy.CONTINUE)
    aggregation = forms.ChoiceField(choices=[("", "none")] + _choices(Strategy.values), required=False)
    budget_usd = forms.FloatField(
        required=False,
        label="Budget (USD)",
        help_text="Optional: no new run starts once spending would pass it; the rest are skipped.",
    )


def agent_choices(agents: Mapping[str, selectors.AgentInfo], *, is_admin: bool) -> list[tuple[str, str]]:
    """Every agent type, labelled with why it cannot run here, so nothing unavailable looks fine."""
    choices = [("", "— agent type —")]
    for name, info in sorted(agents.items()):
        label = name
        if not info.available:
            label += f" — not available: {info.reason}"
        elif info.admin_only and not is_admin:
            label += " — admins only"
        choices.append((name, label))
    return choices


class TaskForm(forms.Form):
    key = forms.CharField(max_length=100, required=False)
    agent = forms.ChoiceField(required=False)
    role = forms.ChoiceField(required=False)
    prompt = forms.CharField(
        required=False, max_length=selectors.SPEC_LIMITS["text_chars"], widget=forms.Textarea(attrs={"rows": 2})
    )
    priority = forms.ChoiceField(choices=[(p.label, p.label) for p in Priority], initial="P1")
    depends_on = forms.CharField(required=False, label="Depends on", help_text="Task keys, comma-separated.")
    files = forms.CharField(required=False, help_text="Globs it may change, comma-separated.")

    def clean_files(self) -> str:
        # Counted before a spec is written from the rows: a pasted list of thousands is refused at once.
        return self._at_most(self.cleaned_data["files"], selectors.SPEC_LIMITS["files_per_task"], "patterns")

    def clean_depends_on(self) -> str:
        return self._at_most(self.cleaned_data["depends_on"], MAX_DEPENDENCIES, "keys")

    @staticmethod
    def _at_most(text: str, most: int, what: str) -> str:
        if len(items := split_list(text)) > most:
            raise forms.ValidationError(f"{len(items)} {what}; the maximum is {most}")
        return text

    def __init__(self, *args, agents: Mapping[str, selectors.AgentInfo], roles, is_admin: bool, **kwargs):
        kwargs.setdefault("prefix", new_prefix())
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = agent_choices(agents, is_admin=is_admin)
        self.fields["role"].choices = [("", "— no role —")] + [(r, r) for r in roles]

    @property
    def row_id(self) -> str:
        return self.prefix

    def is_blank(self) -> bool:
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        return not any(data.get(f) for f in ("key", "agent", "role", "prompt", "depends_on", "files"))

    def as_task(self) -> dict:
        data = self.cleaned_data
        task: dict = {"key": data["key"].strip(), "agent": data["agent"]}
        if data["role"]:
            task["role"] = data["role"]
        if data["prompt"]:
            task["prompt"] = data["prompt"]
        task["priority"] = data["priority"]
        for name in ("depends_on", "files"):
            if items := split_list(data[name]):
                task[name] = items
        return task


class SpecTextForm(forms.Form):
    spec_text = forms.CharField(
        required=False,
        strip=False,
        label="Spec (YAML or JSON)",
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"}),
    )
    spec_file = forms.FileField(required=False, label="or upload a file")

    def clean(self):
        data = super().clean()
        upload = data.get("spec_file")
        if upload:
            if upload.size > SPEC_MAX_BYTES:
                raise forms.ValidationError(f"the file is over {SPEC_MAX_BYTES} bytes")
            try:
                data["spec_text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("the file is not UTF-8 text") from None
            # Show what was uploaded, so the next submit (launch after plan) sends it again.
            self.data = self.data.copy()
            self.data["spec_text"] = data["spec_text"]
        if not (data.get("spec_text") or "").strip():
            raise forms.ValidationError("paste a spec or choose a file")
        return data


def new_prefix() -> str:
    return "t" + secrets.token_hex(3)


def split_list(text: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", text or "") if item]


def spec_text_from_forms(batch_form: BatchForm, task_forms: list[TaskForm]) -> str:
    """The YAML a person would have written for these rows (stored with the batch)."""
    data = batch_form.cleaned_data
    out: dict = {"name": data["name"], "mode": data["mode"], "max_parallel": data["max_parallel"]}
    if data["retries"]:
        out["retries"] = data["retries"]
    if data["timeout"]:
        out["timeout"] = data["timeout"]
    out["failure_policy"] = data["failure_policy"]
    if data["aggregation"]:
        out["aggregation"] = data["aggregation"]
    if data.get("budget_usd") is not None:
        out["budget_usd"] = data["budget_usd"]  # checked by the spec, errors shown on the field
    out["tasks"] = [f.as_task() for f in task_forms]
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=100)


def place_errors(errors: list[FieldError], batch_form: BatchForm | None, task_forms: list[TaskForm]) -> list[str]:
    """Attach each spec error to the form field it names; return those that belong to no field."""
    general = []
    by_key = {f.cleaned_data.get("key", "").strip(): f for f in task_forms if hasattr(f, "cleaned_data")}
    for error in errors:
        if error.index is not None:
            form = task_forms[error.index] if error.index < len(task_forms) else None
        else:
            form = by_key.get(error.task) if error.task else None
        if form is not None:
            if error.field in form.fields:
                form.add_error(error.field, error.message)
            else:
                form.add_error(None, f"{error.field}: {error.message}" if error.field else error.message)
        elif error.task is None and error.index is None and batch_form is not None and error.field in batch_form.fields:
            batch_form.add_error(error.field, error.message)
        else:
            general.append(str(error))
    return general


def place_warnings(unavailable, task_forms: list[TaskForm]) -> list[str]:
    """Tasks whose agent type cannot run here: the message goes on that task's agent field."""
    by_key = {f.cleaned_data.get("key", "").strip(): f for f in task_forms if hasattr(f, "cleaned_data")}
    general = []
    for key, why in unavailable:
        if key in by_key:
            by_key[key].add_error("agent", why)
        else:
            general.append(f"task '{key}': {why}")
    return general


# --- fan-in: reviews and escalations ----------------------------------------------------


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=Review.Decision.choices)
    comment = forms.CharField(
        required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Comment"})
    )


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(queryset=None, required=False, empty_label="nobody")

    def __init__(self, *args, **kwargs):
        from django.contrib.auth import get_user_model

        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = get_user_model().objects.filter(is_active=True)


class ResolveForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("retry", "retry the run"), ("accept", "accept the partial result"), ("dismiss", "dismiss")]
    )
    note = forms.CharField(required=False, max_length=10_000)
