"""What the JSON API reads and writes."""

from __future__ import annotations

from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from grading import text
from grading.models import Queue, QueueMode, Status, Submission, SubmissionEvent

DRF_CHARACTER_RULES = (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)


def plain_text(value: str) -> str:
    """Text that every supported database stores as it was sent: grading.text's rule, as on XQueue."""
    problem = text.character_problem(value)
    if problem is not None:
        raise serializers.ValidationError(f"must not contain {problem}")
    return value


class TextField(serializers.CharField):
    """A string, taken as sent (no trimming, no number turned into text), that every database stores."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        # grading.text's rule instead of DRF's own NUL and surrogate validators: one rule, one wording, on both APIs.
        for rule in [v for v in self.validators if isinstance(v, DRF_CHARACTER_RULES)]:
            self.validators.remove(rule)
        self.validators.append(plain_text)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a string")
        return str(super().to_internal_value(data))


class WholeNumberField(serializers.IntegerField):
    """A JSON integer: not a string of digits, a float or a boolean (which DRF would otherwise convert)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("must be a whole number")
        return int(super().to_internal_value(data))


class QueueFiguresSerializer(serializers.Serializer):
    waiting = serializers.IntegerField()
    leased = serializers.IntegerField()
    oldest_waiting_age_seconds = serializers.FloatField(allow_null=True)
    failed = serializers.IntegerField()
    dead_letter = serializers.IntegerField()


class QueueSerializer(serializers.ModelSerializer):
    name = TextField(max_length=128)
    mode = serializers.ChoiceField(choices=QueueMode.choices, default=QueueMode.PULL)
    push_url = serializers.URLField(max_length=200, required=False, allow_blank=True)
    push_username = TextField(max_length=150, required=False, allow_blank=True)
    lease_seconds = WholeNumberField(min_value=1, max_value=7 * 24 * 3600, required=False, allow_null=True)
    max_attempts = WholeNumberField(min_value=1, max_value=1000, required=False, allow_null=True)
    max_in_flight = WholeNumberField(min_value=1, max_value=100000, required=False, allow_null=True)

    class Meta:
        model = Queue
        fields = ["name", "mode", "lease_seconds", "max_attempts", "max_in_flight", "push_url", "push_username"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        mode = attrs.get("mode", getattr(self.instance, "mode", QueueMode.PULL))
        push_url = attrs.get("push_url", getattr(self.instance, "push_url", ""))
        if mode == QueueMode.HTTP and not push_url:
            raise serializers.ValidationError({"push_url": "A queue in http mode needs a grader URL (push_url)."})
        return attrs


class QueueDetailSerializer(QueueSerializer):
    figures = QueueFiguresSerializer(read_only=True)

    class Meta(QueueSerializer.Meta):
        fields = [*QueueSerializer.Meta.fields, "figures"]


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubmissionEvent
        fields = ["created_at", "from_status", "to_status", "reason", "actor", "details"]


class SubmissionSerializer(serializers.ModelSerializer):
    queue = serializers.CharField(source="queue.name")
    status = serializers.ChoiceField(choices=Status.choices)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Submission
        fields = [
            "id",
            "url",
            "queue",
            "status",
            "lms_key",
            "lms_callback_url",
            "created_at",
            "updated_at",
            "attempts",
            "delivery_attempts",
            "graded_at",
            "delivered_at",
        ]

    def get_url(self, obj: Submission) -> str:
        request = self.context.get("request")
        path = f"/api/v1/submissions/{obj.pk}/"
        return request.build_absolute_uri(path) if request is not None else path


class SubmissionDetailSerializer(SubmissionSerializer):
    result = serializers.SerializerMethodField(help_text="What is (or will be) posted to the LMS, once graded.")
    failure_reason = serializers.CharField()
    timeline = EventSerializer(many=True, source="events")

    class Meta(SubmissionSerializer.Meta):
        fields = [*SubmissionSerializer.Meta.fields, "body", "files", "result", "failure_reason", "timeline"]

    def get_result(self, obj: Submission) -> str | None:
        return obj.lms_body or None


class SubmitSerializer(serializers.Serializer):
    """The JSON equivalent of ``/xqueue/submit/``: the three header keys as fields, the body as text."""

    queue = TextField(max_length=128)
    lms_callback_url = TextField(max_length=4096)
    lms_key = TextField(max_length=1024, allow_blank=True, default="")
    body = TextField(allow_blank=True, max_length=4 * 1024 * 1024)
    header = serializers.DictField(
        required=False, default=dict, help_text="Extra keys for the LMS header (kept and sent back with the grade)."
    )


class SubmittedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Status.choices)
    url = serializers.CharField(help_text="Where to poll for the result.")
    queue_length = serializers.IntegerField()


class BulkActionSerializer(serializers.Serializer):
    queue = TextField(max_length=128, required=False)
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    lms_key = TextField(max_length=1024, required=False)
    older_than = WholeNumberField(min_value=0, max_value=10**9, required=False, help_text="seconds")
    limit = WholeNumberField(min_value=1, max_value=1000, default=100)


class ActionResultSerializer(serializers.Serializer):
    matched = serializers.IntegerField()
    changed = serializers.ListField(child=serializers.IntegerField())
