"""Django admin for queues, grants and submissions. Every action goes through ``grading.lifecycle``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from grading import lifecycle, secretbox
from grading.models import Queue, QueueGrant, Submission, SubmissionEvent, callback_digest
from grading.stats import format_age


class QueueGrantInline(admin.TabularInline):
    model = QueueGrant
    extra = 0
    autocomplete_fields = ["user"]


class QueueForm(forms.ModelForm):
    """The push password is write-only: the form never shows it (not even encrypted), only replaces or clears it."""

    new_push_password = forms.CharField(
        label="Push password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="HTTP push: the basic auth password. Leave empty to keep the current one.",
    )
    clear_push_password = forms.BooleanField(label="Remove the push password", required=False)

    class Meta:
        model = Queue
        # Listed, not excluded: a field added to Queue later is not put in the form unseen.
        fields = ["name", "mode", "lease_seconds", "max_attempts", "max_in_flight", "push_url", "push_username"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.push_password:
            self.fields[
                "new_push_password"
            ].help_text = "HTTP push: a password is set (stored encrypted, never shown). Leave empty to keep it."

    def save(self, commit: bool = True) -> Any:
        queue = super().save(commit=False)
        if self.cleaned_data.get("clear_push_password"):
            queue.push_password = ""
        elif self.cleaned_data.get("new_push_password"):
            queue.push_password = secretbox.seal(self.cleaned_data["new_push_password"])
        if commit:
            queue.save()
            self.save_m2m()
        return queue


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    form = QueueForm
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
        # The ids first: the queryset may carry the changelist's status filter, which the action changes.
        selected = list(queryset.values_list("pk", flat=True))
        done = sum(1 for pk in selected if action(pk, actor=actor))
        skipped = len(selected) - done
        modeladmin.message_user(request, f"{verb}: {done} submission(s).", messages.SUCCESS)
        if skipped:
            modeladmin.message_user(
                request,
                f"{skipped} submission(s) were skipped: not in a state that allows it.",
                messages.WARNING,
            )

    run.__name__ = action.__name__
    return run


class AgeFilter(admin.SimpleListFilter):
    """How long ago the submission arrived: during an exam, "waiting for more than 30 minutes" is the question."""

    title = "age"
    parameter_name = "age"
    BANDS: dict[str, tuple[timedelta | None, timedelta | None, str]] = {
        "lt5m": (None, timedelta(minutes=5), "Under 5 minutes"),
        "5m-30m": (timedelta(minutes=5), timedelta(minutes=30), "5 to 30 minutes"),
        "30m-2h": (timedelta(minutes=30), timedelta(hours=2), "30 minutes to 2 hours"),
        "2h-1d": (timedelta(hours=2), timedelta(days=1), "2 hours to 1 day"),
        "gt1d": (timedelta(days=1), None, "Over 1 day"),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(key, label) for key, (_, _, label) in self.BANDS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Submission]) -> QuerySet[Submission]:
        band = self.BANDS.get(self.value() or "")
        if band is None:
            return queryset
        younger_than_min, older_than_max = band[0], band[1]
        now = timezone.now()
        if younger_than_min is not None:
            queryset = queryset.filter(created_at__lte=now - younger_than_min)
        if older_than_max is not None:
            queryset = queryset.filter(created_at__gt=now - older_than_max)
        return queryset


class CappedPaginator(Paginator):
    """Counts the matching rows up to ``CAP`` only: a semester keeps a million submissions, and counting them
    all at every page view costs as much as the rest of the page many times over."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP].count()  # type: ignore[attr-defined,no-any-return,index]


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["id", "queue", "status", "age", "attempts", "delivery_attempts", "created_at", "updated_at"]
    list_filter = ["status", "queue", AgeFilter]
    list_select_related = ["queue"]
    # Every look-up walks an index (see get_search_results): no substring search over every kept row, no
    # count of them all (the list says "10000" for any more), and no date hierarchy, whose year and month
    # links are a DISTINCT over every row's date (the age filter answers "how long has it waited").
    search_fields = ["=id", "=lms_callback_url"]
    search_help_text = "A submission id, or an LMS callback URL in full (one student's answers to one problem)."
    paginator = CappedPaginator
    show_full_result_count = False
    inlines = [EventInline]
    actions = [
        admin.action(description="Requeue for grading")(_bulk(lifecycle.requeue, "Requeued")),
        admin.action(description="Fail and notify the LMS")(_bulk(lifecycle.fail_with_notice, "Failed")),
        admin.action(description="Redeliver the grade to the LMS")(_bulk(lifecycle.redeliver, "Redelivering")),
        admin.action(description="Cancel")(_bulk(lifecycle.cancel, "Cancelled")),
    ]

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: Submission) -> str:
        return format_age((timezone.now() - obj.created_at).total_seconds())

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Submission], search_term: str
    ) -> tuple[QuerySet[Submission], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(pk=int(term)), False
        # By the callback URL's digest, which the supersede index holds; the URL itself rules out a collision.
        return queryset.filter(callback_hash=callback_digest(term), lms_callback_url=term), False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Nothing here may be edited by hand: state changes go through the actions (and the lifecycle).
        return [f.name for f in Submission._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # purge_submissions deletes finished submissions (and counts their events into the metrics first).
        return False
