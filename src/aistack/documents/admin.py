from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest

from aistack.documents.models import Document
from aistack.jobs.services import job_enqueue


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin[Document]):
    list_display = ["title", "workspace", "author", "embedding_status", "summary_status",
                    "updated_at"]
    list_filter = ["embedding_status", "summary_status", "workspace"]
    search_fields = ["title"]
    readonly_fields = ["content_hash", "created_at", "updated_at", "embedding_status",
                       "embedding_error", "summary_status", "summary_error"]
    raw_id_fields = ["author"]

    def save_model(self, request: HttpRequest, obj: Document, form: ModelForm[Document],
                   change: bool) -> None:
        # Saving through the admin must process changed content like the API does.
        from aistack.documents.services import document_update
        from aistack.documents.tasks import DOCUMENT_INDEX

        if change:
            document_update(document=obj)
        else:
            if obj.author_id is None and request.user.is_authenticated:
                obj.author_id = request.user.pk
            super().save_model(request, obj, form, change)
            job_enqueue(kind=DOCUMENT_INDEX, object_id=obj.pk)
