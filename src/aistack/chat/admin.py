from django.contrib import admin

from aistack.chat.models import ChatMessage, Conversation


class ChatMessageInline(admin.TabularInline[ChatMessage, Conversation]):
    model = ChatMessage
    extra = 0
    fields = ["role", "content", "model", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ["title", "user", "updated_at"]
    search_fields = ["title", "user__username"]
    inlines = [ChatMessageInline]
