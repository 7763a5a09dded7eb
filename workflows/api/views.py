# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---

from django.core.exceptions import ValidationError as DjangoValidationError  # noqa: E402
from drf_spectacular.types import OpenApiTypes  # noqa: E402
from drf_spectacular.utils import extend_schema  # noqa: E402
from rest_framework import mixins, viewsets  # noqa: E402
from rest_framework import status as http  # noqa: E402
from rest_framework.decorators import action  # noqa: E402
from rest_framework.exceptions import ValidationError  # noqa: E402
from rest_framework.response import Response  # noqa: E402

from crm.api import CreatedCursorPagination, StrictModelPermissions, requires  # noqa: E402
from workflows.api.serializers import (  # noqa: E402
    WorkflowRunRequestSerializer,
    WorkflowRunSerializer,
    WorkflowSerializer,
)
from workflows.models import RunTrigger, Workflow, WorkflowRun  # noqa: E402
from workflows.services import (  # noqa: E402
    WorkflowError,
    workflow_create,
    workflow_preview,
    workflow_run_request,
    workflow_update,
)

CanRunWorkflows = requires("workflows.view_workflow", "workflows.run_workflow")


def _as_drf(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


class WorkflowViewSet(viewsets.ModelViewSet):
    """Workflows: CRUD with model permissions; preview and run need workflows.run_workflow."""

    queryset = Workflow.objects.order_by("id")
    serializer_class = WorkflowSerializer
    permission_classes = [StrictModelPermissions]
    pagination_class = CreatedCursorPagination

    def perform_create(self, serializer):
        try:
            serializer.instance = workflow_create(
                actor=self.request.user, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc

    def perform_update(self, serializer):
        try:
            serializer.instance = workflow_update(
                workflow=serializer.instance, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], permission_classes=[CanRunWorkflows])
    def preview(self, request, pk=None):
        """A dry run: how many would enroll, a sample of 20, how many would become marketing,
        the billing impact. Nothing is written."""
        return Response(workflow_preview(workflow=self.get_object()).as_dict())

    @extend_schema(request=WorkflowRunRequestSerializer, responses={202: WorkflowRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[CanRunWorkflows])
    def run(self, request, pk=None):
        """Queue a run (it runs in the background; eagerly in the embedded set-up). The key
        (body `idempotency_key` or header `Idempotency-Key`) makes a retry answer the same run."""
        body = WorkflowRunRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = body.validated_data.get("idempotency_key") or request.headers.get("Idempotency-Key")
        try:
            run = workflow_run_request(
                workflow=self.get_object(),
                trigger=RunTrigger.API,
                actor=request.user,
                idempotency_key=f"api:{request.user.pk}:{key}" if key else None,
            )
        except WorkflowError as error:
            raise ValidationError({"idempotency_key": [str(error)]}) from error
        run.refresh_from_db()
        return Response(WorkflowRunSerializer(run).data, status=http.HTTP_202_ACCEPTED)


class WorkflowRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs, newest first (read-only). Filter by `?workflow=<id>` and `?status=`."""

    serializer_class = WorkflowRunSerializer
    permission_classes = [StrictModelPermissions]
    pagination_class = CreatedCursorPagination

    def get_queryset(self):
        runs = WorkflowRun.objects.all()  # workflowrun_workflow_idx (workflow, -id)
        params = self.request.query_params
        if params.get("workflow", "").isdigit():
            runs = runs.filter(workflow_id=int(params["workflow"]))
        if params.get("status"):
            runs = runs.filter(status=params["status"])
        return runs


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
