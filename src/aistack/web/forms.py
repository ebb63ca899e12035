"""Forms of the web pages; the services still decide what is valid."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from aistack.accounts.models import Role, Workspace
from aistack.ai.models import Provider
from aistack.documents.parsing import SUPPORTED_TYPES
from aistack.errors import AppError
from aistack.retrieval.api import MAX_QUERY_CHARS
from aistack.retrieval.selectors import SearchMode


def add_service_errors(form: forms.Form, error: AppError) -> None:
    """Show a service's refusal beside the fields it names, or above the form."""
    details = error.details if isinstance(error.details, dict) else {}
    named = [field for field in details if field in form.fields]
    for field in named:
        for message in details[field]:
            form.add_error(field, message)
    if not named:
        form.add_error(None, error.message)


class DocumentForm(forms.Form):
    title = forms.CharField(max_length=settings.DOCUMENT_TITLE_MAX_CHARS)
    content = forms.CharField(widget=forms.Textarea(attrs={"rows": 16}),
                              max_length=settings.DOCUMENT_MAX_CHARS, strip=False)


UPLOAD_EXTENSIONS = tuple(ext for t in SUPPORTED_TYPES.values() for ext in t.extensions)
UPLOAD_MIME_TYPES = tuple(mime for t in SUPPORTED_TYPES.values() for mime in t.mime_types)
# What the file pickers offer: every extension and MIME type the parser accepts.
UPLOAD_ACCEPT = ",".join([*UPLOAD_EXTENSIONS, *UPLOAD_MIME_TYPES])


class UploadForm(forms.Form):
    """One file, as a page without JavaScript sends it; upload.js sends many through the API."""

    file = forms.FileField(label="Choose a file",
                           widget=forms.ClearableFileInput(attrs={"accept": UPLOAD_ACCEPT}))


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=120)


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EDITOR)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, such as "
                                                     "“Claude on my laptop”.")
    workspace = forms.ModelChoiceField(
        queryset=Workspace.objects.none(), required=False, empty_label="All of my workspaces",
        label="Limit to workspace")
    read_only = forms.BooleanField(
        required=False, label="Read only",
        help_text="Search, read and ask, but never add, change or delete documents.")

    def __init__(self, *args: Any, workspaces: QuerySet[Workspace], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["workspace"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = workspaces


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class SearchForm(forms.Form):
    q = forms.CharField(label="Search for", max_length=MAX_QUERY_CHARS, required=False)
    mode = forms.ChoiceField(
        choices=[(SearchMode.HYBRID.value, "Hybrid"), (SearchMode.VECTOR.value, "Meaning"),
                 (SearchMode.TEXT.value, "Exact words")],
        initial=SearchMode.HYBRID.value, widget=forms.RadioSelect,
    )


class ModelSetupForm(forms.Form):
    provider = forms.ChoiceField(choices=Provider.choices)
    base_url = forms.CharField(
        label="Address", max_length=500, required=False,
        help_text="Leave empty for the provider's own (Ollama: OLLAMA_BASE_URL). Required "
                  "for an OpenAI-compatible server, like http://127.0.0.1:8080/v1.")
    # Never rendered back, even after a refused form: the browser keeps no copy in the page.
    api_key = forms.CharField(
        label="API key", max_length=500, required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted, never shown. Leave empty to keep the key saved for "
                  "this provider at this address.")
    chat_model = forms.CharField(label="Chat model", max_length=200,
                                 widget=forms.TextInput(attrs={"list": "ollama-models"}),
                                 help_text="As the provider names it, like gpt-4.1-mini.")
    fallbacks = forms.CharField(
        max_length=1000, required=False,
        help_text="Tried in order when the chat model fails, as provider:model, "
                  "comma-separated, like local:extractive.")


class EmbeddingModelForm(forms.Form):
    embedding_model = forms.CharField(
        label="Embedding model", max_length=250, required=False,
        widget=forms.TextInput(attrs={"list": "embedding-models"}),
        help_text="A built-in model (local:all-MiniLM-L6-v2-int8), or a model of the "
                  "provider connected above, as it names it (text-embedding-3-small). "
                  "Empty: AI_EMBEDDING_MODEL.")

