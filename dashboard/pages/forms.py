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
from dataclasses import dataclass

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


AGGREGATION_LABELS = {
    "merge": "merge findings",
    "vote": "vote",
    "priority": "by priority",
    "first_success": "first success",
    "all": "all, side by side",
}


class BatchForm(forms.Form):
    name = forms.CharField(max_length=200)
    mode = forms.ChoiceField(choices=_choices(Mode.values), initial=Mode.PARALLEL)
    max_parallel = forms.IntegerField(min_value=1, initial=3, label="Max parallel")
    retries = forms.IntegerField(min_value=0, initial=0, help_text="Automatic retries per task.")
    timeout = forms.IntegerField(min_value=1, required=False, help_text="Seconds per task.")
    failure_policy = forms.ChoiceField(choices=_choices(FailurePolicy.values), initial=FailurePolicy.CONTINUE)
    # No strategy means "all" (every result side by side), so the form says so rather than "none".
    aggregation = forms.ChoiceField(
        choices=[(v, AGGREGATION_LABELS.get(v, v.replace("_", " "))) for v in Strategy.values],
        initial=Strategy.ALL,
        required=False,
        help_text="How the results are combined when every task has ended.",
    )
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
    """The YAML a person would have written for these rows (stored with the batch).

    A batch field the form refused is left out (the spec's default stands in), so the spec's own
    checks still run and every problem shows in one answer; the page launches nothing while the
    form has errors."""
    data = getattr(batch_form, "cleaned_data", {})
    out: dict = {"name": data.get("name", "")}
    for name in ("mode", "max_parallel"):
        if data.get(name):
            out[name] = data[name]
    for name in ("retries", "timeout"):
        if data.get(name):
            out[name] = data[name]
    if data.get("failure_policy"):
        out["failure_policy"] = data["failure_policy"]
    if data.get("aggregation"):
        out["aggregation"] = data["aggregation"]
    if data.get("budget_usd") is not None:
        out["budget_usd"] = data["budget_usd"]  # checked by the spec, errors shown on the field
    out["tasks"] = [f.as_task() for f in task_forms]
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=100)


def place_errors(
    errors: list[FieldError], batch_form: BatchForm | None, task_forms: list[TaskForm], *, words: bool = False
) -> list[str]:
    """Attach each spec error to the form field it names; return those that belong to no field.

    With `words`, each says it in the form's words (`form_message`); a field the form's own check
    already refused (the same value, said by the form) gets no second say, and the spec's errors on
    one field are each said once (an unknown dependency and a cycle on one row are both shown)."""
    general = []
    checked = {  # (form, field) pairs the form's own validation refused
        (id(f), name) for f in [batch_form, *task_forms] if f is not None and f.is_bound for name in f.errors
    }

    def say(form, field: str, message: str) -> None:
        if words and ((id(form), field) in checked or message in form.errors.get(field, ())):
            return
        form.add_error(field, message)

    by_key = {f.cleaned_data.get("key", "").strip(): f for f in task_forms if hasattr(f, "cleaned_data")}
    for error in errors:
        if error.index is not None:
            form = task_forms[error.index] if error.index < len(task_forms) else None
        else:
            form = by_key.get(error.task) if error.task else None
        batch_field = error.task is None and error.index is None and batch_form is not None
        message = form_message(error) if words else error.message
        if batch_field and words and error.field == "tasks" and task_forms:
            form = task_forms[0]  # "add a task" goes on the first (blank) row
            error = FieldError(error.where, "key", error.message, index=0)
        if form is not None:
            if error.field in form.fields:
                say(form, error.field, message)
            else:
                form.add_error(None, f"{error.field}: {message}" if error.field else message)
        elif batch_field and error.field in batch_form.fields:
            say(batch_form, error.field, message)
        else:
            general.append(f"{error.field}: {message}" if words and error.field else message if words else str(error))
    return general


# --- errors in the form's words --------------------------------------------------------------

_TASK_PLACE = re.compile(r"task '([^']*)' \(tasks\[(\d+)\](?:, line \d+)?\)")
_PLACE = re.compile(r"tasks\[(\d+)\](?:, line \d+)?")


def form_message(error: FieldError) -> str:
    """A spec error as the form would say it: the form has rows and fields, not `tasks[0]`, lines,
    or a batch-wide agent."""
    message = error.message
    field = error.field
    if field == "agent" and message.startswith("is required"):
        return "pick an agent"
    if field == "key" and message.startswith("must be letters"):
        if message.endswith("got ''") or message.endswith("got None"):
            return "give the task a key: letters, digits, '_', '-' or '.'"
        return "the key must be letters, digits, '_', '-' or '.' (100 at most), with no spaces"
    if field == "tasks" and error.where == "batch" and "empty" in message:
        return "add a task: fill in its key, agent and prompt"
    if field == "name" and message.startswith("is required"):
        return "give the batch a name"
    message = _TASK_PLACE.sub(lambda m: f"task {int(m[2]) + 1} ('{m[1]}')", message)
    message = _PLACE.sub(lambda m: f"task {int(m[1]) + 1}", message)
    if field == "depends_on" and message.startswith("unknown dependency"):
        return message + ": no task has this key"
    if field == "depends_on" and message.startswith("dependency cycle"):
        return message.replace(" -> ", " → ") + ": remove one of these from a task's Depends on"
    message = message.replace(
        "add a depends_on between them or narrow 'files'", "make one depend on the other (Depends on) or narrow Files"
    )
    return message.replace("(leave it out for no budget)", "(leave it empty for no budget)")


def yaml_message(error: FieldError) -> str:
    """A spec error for the YAML box: its line is said once, by the summary, not as `tasks[0], line 6`."""
    message = _TASK_PLACE.sub(lambda m: f"task '{m[1]}'", error.message)
    return _PLACE.sub(lambda m: f"task {int(m[1]) + 1}", message)


@dataclass(frozen=True)
class Problem:
    """One line of the error summary: what it concerns, what is wrong, and where to go to fix it."""

    label: str
    message: str
    anchor: str = ""  # the id of the field (focused by the summary's link)
    line: int | None = None  # in the YAML box


def form_problems(batch_form: BatchForm, task_forms: list[TaskForm], general: list[str]) -> list[Problem]:
    """Every error the form shows, in page order, each linked to its field; identical ones once."""
    found: list[Problem] = []
    for name, errors in batch_form.errors.items() if batch_form.is_bound else []:
        if name in batch_form.fields:
            field = batch_form[name]
            found += [Problem(str(field.label), str(e), field.auto_id) for e in errors]
    for number, form in enumerate(task_forms, 1):
        if not form.is_bound:
            continue
        for name, errors in form.errors.items():
            if name in form.fields:
                field = form[name]
                found += [Problem(f"Task {number}: {field.label}", str(e), field.auto_id) for e in errors]
            else:
                found += [Problem(f"Task {number}", str(e), f"row-{form.prefix}") for e in errors]
    found += [Problem("Batch", message) for message in general]
    seen: set[tuple[str, str]] = set()
    unique = []
    for problem in found:
        if (problem.label, problem.message) not in seen:
            seen.add((problem.label, problem.message))
            unique.append(problem)
    return unique


def yaml_problems(errors: list[FieldError], general: list[str] = ()) -> list[Problem]:
    """The spec's errors for the YAML box, each pointing at its line."""
    found = []
    for error in errors:
        line = error.at_line or error.line
        parts = [f"Line {line}"] if line else []
        if error.task:
            parts.append(f"task '{error.task}'")
        elif error.index is not None:
            parts.append(f"task {error.index + 1}")
        if error.field:
            parts.append(error.field)
        if not parts:
            parts.append(error.where[:1].upper() + error.where[1:])
        found.append(Problem(", ".join(parts), yaml_message(error), "id_spec_text", line))
    return found + [Problem("Spec", message, "id_spec_text") for message in general]


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
