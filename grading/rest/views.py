"""The JSON API's views: queues, submissions, operator actions and submit.

Who sees what: an operator (a staff account's token) sees and acts on every queue. Any other account sees
the queues it is granted (as LMS or grader) with their figures, and, as an LMS, submits to its LMS queues
and reads the submissions it submitted there. Everything else answers 404, as for a queue that does not
exist, so names and ids do not leak.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
    renderer_classes,
)
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from grading import access, headers, lifecycle, stats, submissions
from grading.models import Queue, Role, Status, Submission
from grading.rest import problems, serializers
from grading.rest.auth import BearerTokenAuthentication
from grading.rest.parsers import SafeJSONParser


def is_operator(user: Any) -> bool:
    return bool(user.is_staff and user.is_active)


def actor(request: Request) -> str:
    return f"api:{request.user.get_username()}"


class IsOperator(BasePermission):
    message = "Only operator (staff) tokens may do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_operator(request.user)


class ApiMixin:
    """The JSON API's ground rules, in place of the XQueue defaults of the REST_FRAMEWORK setting."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes: list[Any] = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes: list[Any] = [SafeJSONParser]
    content_negotiation_class = DefaultContentNegotiation
    metadata_class = None  # OPTIONS answers 405 like any other method an operation does not have
    # Query parameters this view reads. Any other is refused: a mistyped filter (``stauts=failed``) must not
    # quietly select everything, least of all for a bulk action.
    query_parameters: frozenset[str] = frozenset()

    def get_exception_handler(self) -> Any:
        return problems.handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        unknown = sorted(set(request.query_params) - self.query_parameters)
        if unknown:
            raise ValidationError({"query": f"Unknown query parameter(s): {', '.join(map(repr, unknown))}."})


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([AllowAny])
@renderer_classes([JSONRenderer])
def not_found(request: Request) -> Response:
    return problems.problem(404, "No such resource in the API; see /api/v1/schema/.")


def visible_queues(user: Any) -> QuerySet[Queue]:
    queues = Queue.objects.order_by("name")
    if is_operator(user):
        return queues
    return queues.filter(pk__in=[q.pk for q in access.granted(user)])


def visible_submissions(user: Any) -> QuerySet[Submission]:
    found = Submission.objects.select_related("queue")
    if is_operator(user):
        return found
    lms_queues = [q.pk for q in access.granted(user, Role.LMS)]
    return found.filter(queue_id__in=lms_queues, submitted_by=user)


def with_figures(queue: Queue) -> Queue:
    row = stats.queue_stats([queue.name])[0]
    queue.figures = {  # type: ignore[attr-defined]
        "waiting": row.waiting,
        "leased": row.leased,
        "oldest_waiting_age_seconds": row.oldest_age_seconds,
        "failed": row.failed,
        "dead_letter": row.dead_letter,
    }
    return queue


class QueueList(ApiMixin, generics.ListCreateAPIView):
    """The queues this token may see; operators create queues here."""

    serializer_class = serializers.QueueSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Queue]:
        return visible_queues(self.request.user)

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [IsAuthenticated(), IsOperator()]
        return super().get_permissions()

    def perform_create(self, serializer: Any) -> None:
        if Queue.objects.filter(name=serializer.validated_data["name"]).exists():
            raise ValidationError({"name": "A queue with this name exists already."})
        serializer.save()


class QueueDetail(ApiMixin, generics.RetrieveUpdateAPIView):
    """One queue with its live figures; operators change its settings here."""

    serializer_class = serializers.QueueDetailSerializer
    lookup_field = "name"
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[Queue]:
        return visible_queues(self.request.user)

    def get_object(self) -> Queue:
        return with_figures(super().get_object())

    def get_permissions(self) -> list[Any]:
        if self.request.method == "PATCH":
            return [IsAuthenticated(), IsOperator()]
        return super().get_permissions()

    def perform_update(self, serializer: Any) -> None:
        if "name" in serializer.validated_data and serializer.validated_data["name"] != serializer.instance.name:
            raise ValidationError({"name": "A queue's name cannot be changed (graders and the LMS use it)."})
        serializer.save()


class NewestFirst(CursorPagination):
    """Cursor pagination on the primary key: every page is one index range scan, at any depth."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Any) -> int:
        # DRF falls back on the default for a page size it cannot read; a client should hear of its mistake.
        values = request.query_params.getlist(self.page_size_query_param)
        if not values:
            return self.page_size
        value = values[-1]
        if len(values) > 1 or not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= self.max_page_size:
            raise ValidationError({"page_size": f"One whole number from 1 to {self.max_page_size}."})
        return int(value)

    def decode_cursor(self, request: Any) -> Any:
        if request.query_params.get(self.cursor_query_param) == "":
            raise ValidationError({"cursor": "Empty; leave the parameter out for the first page."})
        return super().decode_cursor(request)


SECONDS = {"type": "integer", "minimum": 0, "maximum": 9999999999}
FILTERS = [
    OpenApiParameter("queue", {"type": "string", "minLength": 1}, description="queue name"),
    OpenApiParameter("status", str, enum=Status.values),
    OpenApiParameter("lms_key", {"type": "string", "minLength": 1}),
    OpenApiParameter("older_than", SECONDS, description="submitted at least this many seconds ago"),
    OpenApiParameter("newer_than", SECONDS, description="submitted at most this many seconds ago"),
]


def _seconds(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise ValidationError({name: "A whole number of seconds, at most 10 digits."})
    return int(value)


def filtered(found: QuerySet[Submission], params: dict[str, Any]) -> QuerySet[Submission]:
    """Submissions narrowed by the filters of FILTERS (query parameters, or a bulk action's body)."""
    for name in ("queue", "lms_key"):
        value = params.get(name)
        if value is not None:
            try:
                serializers.TextField().run_validation(value)
            except ValidationError as exc:
                raise ValidationError({name: exc.detail}) from None
    if params.get("queue") is not None:
        found = found.filter(queue__name=params["queue"])
    if params.get("status") is not None:
        if params["status"] not in Status.values:
            raise ValidationError({"status": f"One of: {', '.join(Status.values)}."})
        found = found.filter(status=params["status"])
    if params.get("lms_key") is not None:
        found = found.filter(lms_key=params["lms_key"])
    now = timezone.now()
    older = _seconds(None if params.get("older_than") is None else str(params["older_than"]), "older_than")
    newer = _seconds(None if params.get("newer_than") is None else str(params["newer_than"]), "newer_than")
    if older is not None:
        found = found.filter(created_at__lte=now - timedelta(seconds=older))
    if newer is not None:
        found = found.filter(created_at__gte=now - timedelta(seconds=newer))
    return found


class SubmissionList(ApiMixin, generics.GenericAPIView):
    """List submissions (newest first, cursor-paginated), or submit a new one."""

    pagination_class = NewestFirst
    parser_classes = [SafeJSONParser, MultiPartParser]
    query_parameters = frozenset({"cursor", "page_size", "queue", "status", "lms_key", "older_than", "newer_than"})

    def get_queryset(self) -> QuerySet[Submission]:
        return filtered(visible_submissions(self.request.user), self.request.query_params)

    @extend_schema(parameters=FILTERS, responses=serializers.SubmissionSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        data = serializers.SubmissionSerializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)

    @extend_schema(
        request={
            "application/json": serializers.SubmitSerializer,
            "multipart/form-data": {
                "type": "object",
                "properties": {
                    "queue": {"type": "string"},
                    "lms_callback_url": {"type": "string"},
                    "lms_key": {"type": "string"},
                    "body": {"type": "string"},
                    "header": {"type": "string", "description": "JSON text of an object of extra header keys"},
                },
                "required": ["queue", "lms_callback_url", "body"],
                "additionalProperties": {"type": "string", "format": "binary"},
            },
        },
        responses={201: serializers.SubmittedSerializer},
        description="The JSON equivalent of /xqueue/submit/. Files go as the parts of a multipart body; the "
        "grade is POSTed to lms_callback_url exactly as for an XQueue submission.",
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError({"detail": "The body must be a JSON object (or a multipart form)."})
        data: dict[str, Any] = {k: request.data.get(k) for k in ("queue", "lms_callback_url", "lms_key", "body")}
        data = {k: v for k, v in data.items() if v is not None}
        extra = request.data.get("header")
        if request.content_type.startswith("multipart/") and isinstance(extra, str) and extra:
            try:
                extra = json.loads(extra)
            except (ValueError, RecursionError):
                raise ValidationError({"header": "JSON text of an object."}) from None
        if extra is not None:
            data["header"] = extra
        given = serializers.SubmitSerializer(data=data)
        given.is_valid(raise_exception=True)
        fields = given.validated_data
        queue = Queue.objects.filter(name=fields["queue"]).first()
        if queue is None or not (is_operator(request.user) or access.queue_for(request.user, queue.name, Role.LMS)):
            raise ValidationError({"queue": f"Queue '{fields['queue']}' not found."})
        uploads = dict(request.FILES.items())
        try:
            submission, length = submissions.accept(
                queue=queue,
                user=request.user,
                header=headers.new_lms_header(
                    queue.name, fields["lms_callback_url"], fields["lms_key"], fields["header"]
                ),
                body=fields["body"],
                uploads=uploads,
                upload_count=sum(len(parts) for _, parts in request.FILES.lists()),
            )
        except submissions.Refused as exc:
            raise ValidationError({"detail": str(exc)}) from None
        url = request.build_absolute_uri(f"/api/v1/submissions/{submission.pk}/")
        body = {"id": submission.pk, "status": submission.status, "url": url, "queue_length": length}
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": url})


class SubmissionDetail(ApiMixin, generics.RetrieveAPIView):
    """One submission with its result (once graded) and its timeline, for clients that poll."""

    serializer_class = serializers.SubmissionDetailSerializer

    def get_queryset(self) -> QuerySet[Submission]:
        return visible_submissions(self.request.user).prefetch_related("events")


ACTIONS = {
    "requeue": lifecycle.requeue,
    "cancel": lifecycle.cancel,
    "fail": lifecycle.fail_with_notice,
    "redeliver": lifecycle.redeliver,
}
ACTION_HELP = (
    "requeue: back in its queue, attempts from zero; cancel: never handed out or delivered again; fail: give "
    "up and send the LMS the 'could not be graded' notice; redeliver: send a dead-lettered grade again."
)


class SubmissionAction(ApiMixin, APIView):
    """An operator action on one submission, through the lifecycle, recorded with the token's account."""

    permission_classes = [IsAuthenticated, IsOperator]

    @extend_schema(
        request=None,
        operation_id="submission_action",
        responses={200: serializers.SubmissionDetailSerializer},
        parameters=[OpenApiParameter("action", str, OpenApiParameter.PATH, enum=list(ACTIONS))],
        description=ACTION_HELP + " Answers 409 when the submission's status does not allow the action.",
    )
    def post(self, request: Request, pk: int, action: str) -> Response:
        if action not in ACTIONS:
            return problems.problem(404, f"No action '{action}'; one of: {', '.join(ACTIONS)}.")
        submission = get_object_or_404(Submission, pk=pk)
        if not ACTIONS[action](submission.pk, actor=actor(request)):
            submission.refresh_from_db()
            return problems.problem(409, f"A submission in status '{submission.status}' cannot be {action}ed now.")
        fresh = Submission.objects.select_related("queue").prefetch_related("events").get(pk=pk)
        return Response(serializers.SubmissionDetailSerializer(fresh, context={"request": request}).data)


class BulkAction(ApiMixin, APIView):
    """An operator action on every submission that matches a filter (at most ``limit``, oldest first)."""

    permission_classes = [IsAuthenticated, IsOperator]

    @extend_schema(
        operation_id="bulk_action",
        request=serializers.BulkActionSerializer,
        responses={200: serializers.ActionResultSerializer},
        parameters=[OpenApiParameter("action", str, OpenApiParameter.PATH, enum=list(ACTIONS))],
        description=ACTION_HELP + " Submissions whose status does not allow the action are left as they are.",
    )
    def post(self, request: Request, action: str) -> Response:
        if action not in ACTIONS:
            return problems.problem(404, f"No action '{action}'; one of: {', '.join(ACTIONS)}.")
        given = serializers.BulkActionSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        params = given.validated_data
        if not any(k in params for k in ("queue", "status", "lms_key", "older_than")):
            raise ValidationError({"detail": "A bulk action needs a filter: queue, status, lms_key or older_than."})
        ids = list(
            filtered(Submission.objects.all(), params).order_by("id").values_list("pk", flat=True)[: params["limit"]]
        )
        changed = [pk for pk in ids if ACTIONS[action](pk, actor=actor(request))]
        return Response({"matched": len(ids), "changed": changed})
