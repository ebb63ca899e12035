from django.contrib import admin

from aistack.retrieval.models import Chunk


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin[Chunk]):
    list_display = ["document", "ordinal", "token_count", "start_char", "end_char"]
    search_fields = ["text"]
    raw_id_fields = ["document", "workspace"]
