"""The web pages' routes."""

from django.contrib.auth import views as auth_views
from django.urls import path

from aistack.accounts.throttling import login_throttled
from aistack.web import ai_models, documents, search, tokens, workspaces

LOGIN_PAGE = "web/login.html"

urlpatterns = [
    path("", documents.index, name="index"),
    path("login/", login_throttled(auth_views.LoginView.as_view(
        template_name=LOGIN_PAGE, redirect_authenticated_user=True,
    ), template_name=LOGIN_PAGE), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("workspace/", workspaces.workspace_switch, name="workspace-switch"),
    path("workspaces/new/", workspaces.workspace_new, name="workspace-new"),
    path("members/", workspaces.members, name="members"),
    path("members/invite/", workspaces.member_invite, name="member-invite"),
    path("members/<int:membership_id>/role/", workspaces.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", workspaces.member_remove, name="member-remove"),
    path("documents/", documents.documents, name="documents"),
    path("documents/new/", documents.document_new, name="document-new"),
    path("documents/upload/", documents.document_upload, name="document-upload"),
    path("documents/<int:document_id>/", documents.document_page, name="document"),
    path("documents/<int:document_id>/edit/", documents.document_edit, name="document-edit"),
    path("documents/<int:document_id>/delete/", documents.document_delete_confirm,
         name="document-delete"),
    path("documents/<int:document_id>/chunks/", documents.document_chunks, name="document-chunks"),
    path("tokens/", tokens.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", tokens.token_revoke, name="token-revoke"),
    path("search/", search.search_page, name="search"),
    path("ask/", search.ask_page, name="ask"),
    path("models/", ai_models.models_page, name="models"),
    path("models/clear/", ai_models.models_clear, name="models-clear"),
    path("models/embedding/", ai_models.models_embedding, name="models-embedding"),
    path("models/embedding/retry/", ai_models.models_embedding_retry,
         name="models-embedding-retry"),
]
