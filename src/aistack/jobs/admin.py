from django.contrib import admin

from aistack.admin_records import RecordAdmin
from aistack.jobs.models import Job


@admin.register(Job)
class JobAdmin(RecordAdmin[Job]):
    list_display = ["kind", "object_id", "status", "attempts", "owner", "enqueued_at", "updated_at"]
    list_filter = ["kind", "status"]
    search_fields = ["object_id", "last_error"]
