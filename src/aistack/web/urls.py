"""The web pages' routes."""

from django.contrib.auth import views as auth_views
from django.urls import path

from aistack.web import views

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", auth_views.LoginView.as_view(template_name="web/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("workspace/", views.workspace_switch, name="workspace-switch"),
    path("workspaces/new/", views.workspace_new, name="workspace-new"),
    path("members/", views.members, name="members"),
    path("members/invite/", views.member_invite, name="member-invite"),
    path("members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", views.member_remove, name="member-remove"),
    path("documents/", views.documents, name="documents"),
    path("documents/new/", views.document_new, name="document-new"),
    path("documents/upload/", views.document_upload, name="document-upload"),
    path("documents/<int:document_id>/", views.document_page, name="document"),
    path("documents/<int:document_id>/edit/", views.document_edit, name="document-edit"),
    path("documents/<int:document_id>/delete/", views.document_delete_confirm,
         name="document-delete"),
    path("documents/<int:document_id>/chunks/", views.document_chunks, name="document-chunks"),
    path("search/", views.search_page, name="search"),
    path("ask/", views.ask_page, name="ask"),
]
