"""The dashboard's period (and workspace) picker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms

from aistack.accounts.models import Workspace


class PeriodForm(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    workspace = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                       label="Workspace")

    def __init__(self, *args: Any, workspaces: Sequence[Workspace] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(workspaces) > 1:
            self.fields["workspace"].choices = [  # type: ignore[attr-defined]
                ("", "All of mine"), *((w.pk, w.name) for w in workspaces)]
        else:
            del self.fields["workspace"]
