"""The tokens page: a person makes and revokes their own API tokens (a secret is shown once)."""

from __future__ import annotations

from datetime import datetime, time

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from spawner import permissions, selectors, services
from spawner.errors import ActionRefused, NotAllowed
from spawner.models import ApiToken, PersonalWebhook


class TokenForm(forms.Form):
    name = forms.CharField(max_length=services.TOKEN_NAME_CHARS, help_text="What it is for, e.g. “CI on main”.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    expires = forms.DateField(
        required=False, help_text="Optional: the last day it works.", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not permissions.may_run_admin_only(user):
            self.fields["scope"].choices = [c for c in ApiToken.Scope.choices if c[0] != ApiToken.Scope.ADMIN]


def _page(request, *, form=None, secret="", created=None, error="", hook_error="", status=200):
    context = {
        "form": form or TokenForm(user=request.user),
        "tokens": selectors.api_tokens(request.user),
        "secret": secret,
        "created": created,
        "error": error,
        "now": timezone.now(),
        "server": request.build_absolute_uri("/").rstrip("/"),
        "personal": selectors.personal_webhook(request.user),
        "hook_error": hook_error,
        "formats": PersonalWebhook.Format.choices,
    }
    return render(request, "dashboard/tokens.html", context, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def token_list(request):
    """GET: my tokens. POST: a new one, its secret shown this once."""
    if request.method == "GET":
        return _page(request)
    form = TokenForm(request.POST, user=request.user)
    if not form.is_valid():
        return _page(request, form=form, status=400)
    expires = form.cleaned_data["expires"]
    expires_at = timezone.make_aware(datetime.combine(expires, time.max)) if expires else None
    try:
        token, secret = services.token_create(
            user=request.user, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"], expires_at=expires_at
        )
    except NotAllowed as exc:
        return _page(request, form=form, error=str(exc), status=403)
    except ActionRefused as exc:
        return _page(request, form=form, error=str(exc), status=400)
    return _page(request, secret=secret, created=token)


@require_POST
@login_required
def token_revoke(request, token_id: int):
    try:
        services.token_revoke(token_id=token_id, user=request.user)
    except ActionRefused as exc:
        return _page(request, error=str(exc), status=409)
    messages.success(request, "The token is revoked: it no longer opens the API.")
    return redirect("tokens")


@require_POST
@login_required
def personal_webhook(request):
    """Set (or, empty, remove) my own notification webhook: escalations assigned to me go there."""
    url = request.POST.get("url", "")[:2000]
    try:
        own = services.personal_webhook_set(user=request.user, url=url, fmt=request.POST.get("format", "json"))
    except ActionRefused as exc:
        return _page(request, hook_error=str(exc), status=400)
    if own is None:
        messages.success(request, "Your notification webhook is removed.")
    else:
        messages.success(
            request,
            (
                "Your notification webhook is saved: escalations assigned to you and reviews requested of you "
                "are sent there."
            ),
        )
    return redirect("tokens")
