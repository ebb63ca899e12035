from django.contrib import admin

from aistack.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = ["kind", "object_id", "status", "attempts", "owner", "enqueued_at", "updated_at"]
    list_filter = ["kind", "status"]
    search_fields = ["object_id", "last_error"]
    readonly_fields = [f.name for f in Job._meta.get_fields()]
