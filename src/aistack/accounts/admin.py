from django.contrib import admin

from aistack.accounts.models import ApiToken, Membership, Workspace


class MembershipInline(admin.TabularInline[Membership, Workspace]):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin[Workspace]):
    list_display = ["name", "slug", "personal_for", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    list_display = ["workspace", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["workspace__name", "user__username"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    list_display = ["prefix", "user", "name", "workspace", "read_only", "created_at",
                    "last_used_at"]
    list_filter = ["read_only"]
    search_fields = ["user__username", "prefix"]
    # A token's owner and scope are fixed when it is made: revoke it and make another.
    readonly_fields = ["user", "workspace", "read_only", "prefix", "key_hash", "created_at",
                       "last_used_at"]

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        # Tokens are shown once at creation, which the admin form cannot do.
        return False
