"""The chat pages' routes."""

from django.urls import path

from aistack.chat import views

urlpatterns = [
    path("chat/", views.chat_page, name="chat"),
    path("chat/<int:conversation_id>/", views.chat_page, name="conversation"),
    path("chat/<int:conversation_id>/rename/", views.rename_conversation,
         name="conversation-rename"),
    path("chat/<int:conversation_id>/delete/", views.delete_conversation,
         name="conversation-delete"),
    path("chat/reply/", views.chat_reply, name="chat-reply"),
]
