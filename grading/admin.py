"""Django admin for queues, grants and submissions. Every action goes through ``grading.lifecycle``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from grading import lifecycle
from grading.models import Queue, QueueGrant, Submission, SubmissionEvent


class QueueGrantInline(admin.TabularInline):
    model = QueueGrant
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ["name", "mode", "lease_seconds", "max_attempts", "created_at"]
    list_filter = ["mode"]
    search_fields = ["name"]
    inlines = [QueueGrantInline]


@admin.register(QueueGrant)
class QueueGrantAdmin(admin.ModelAdmin):
    list_display = ["user", "queue", "role"]
    list_filter = ["role", "queue"]
    search_fields = ["user__username", "queue__name"]
    autocomplete_fields = ["user", "queue"]


class EventInline(admin.TabularInline):
    model = SubmissionEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "from_status", "to_status", "reason", "actor", "details"]
    readonly_fields = ["created_at", "from_status", "to_status", "reason", "actor", "details"]
    ordering = ["id"]
    verbose_name_plural = "Timeline"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _bulk(
    action: Callable[..., bool], verb: str
) -> Callable[[admin.ModelAdmin, HttpRequest, QuerySet[Submission]], None]:
    def run(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Submission]) -> None:
        actor = f"admin:{request.user.get_username()}"
        done = sum(1 for pk in queryset.values_list("pk", flat=True) if action(pk, actor=actor))
        skipped = queryset.count() - done
        modeladmin.message_user(request, f"{verb}: {done} submission(s).", messages.SUCCESS)
        if skipped:
            modeladmin.message_user(
                request,
                f"{skipped} submission(s) were skipped: not in a state that allows it.",
                messages.WARNING,
            )

    run.__name__ = action.__name__
    return run


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["id", "queue", "status", "attempts", "delivery_attempts", "created_at", "updated_at"]
    list_filter = ["status", "queue", "created_at"]
    list_select_related = ["queue"]
    search_fields = ["=id", "lms_callback_url"]
    date_hierarchy = "created_at"
    inlines = [EventInline]
    actions = [
        admin.action(description="Requeue for grading")(_bulk(lifecycle.requeue, "Requeued")),
        admin.action(description="Fail and notify the LMS")(_bulk(lifecycle.fail_with_notice, "Failed")),
        admin.action(description="Redeliver the grade to the LMS")(_bulk(lifecycle.redeliver, "Redelivering")),
        admin.action(description="Cancel")(_bulk(lifecycle.cancel, "Cancelled")),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Nothing here may be edited by hand: state changes go through the actions (and the lifecycle).
        return [f.name for f in Submission._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
