from django.contrib import admin
from django.contrib.auth.models import User
from django.forms import ModelForm
from django.http import HttpRequest

from aistack.documents.models import Document
from aistack.documents.services import document_create, document_update


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin[Document]):
    list_display = ["title", "workspace", "author", "embedding_status", "summary_status",
                    "updated_at"]
    list_filter = ["embedding_status", "summary_status", "workspace"]
    search_fields = ["title"]
    readonly_fields = ["source_name", "source_kind", "content_hash", "created_at",
                       "updated_at", "embedding_status", "embedding_error", "summary_status",
                       "summary_error"]
    # Originals are never served by URL (documents.storage), and uploads go through the API.
    exclude = ["source_file"]
    raw_id_fields = ["author"]

    def save_model(self, request: HttpRequest, obj: Document, form: ModelForm[Document],
                   change: bool) -> None:
        # Through the services, so the admin's edits are processed like the API's.
        if change:
            document_update(document=obj, title=obj.title, content=obj.content)
            return
        author = obj.author if obj.author_id else (
            request.user if isinstance(request.user, User) else None)
        created = document_create(workspace=obj.workspace, title=obj.title,
                                  content=obj.content, author=author)
        obj.pk = created.pk
