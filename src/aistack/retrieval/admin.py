from django.contrib import admin
from django.http import HttpRequest

from aistack.admin_records import RecordAdmin
from aistack.retrieval.models import Chunk, EmbeddingSpace


@admin.register(Chunk)
class ChunkAdmin(RecordAdmin[Chunk]):
    list_display = ["document", "ordinal", "token_count", "start_char", "end_char"]
    search_fields = ["text"]
    raw_id_fields = ["document", "workspace"]


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin[EmbeddingSpace]):
    """Which embedding model search uses; changed only by `aistack reindex`."""

    list_display = ["model", "dimensions", "status", "created_at", "activated_at"]
    readonly_fields = ["model", "dimensions", "status", "created_at", "activated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
