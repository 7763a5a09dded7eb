from dataclasses import asdict

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, viewsets
from rest_framework import status as http
from rest_framework.decorators import action
from rest_framework.exceptions import (
    PermissionDenied,
    ValidationError,
)
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import billing_demotion_saving
from contacts.engagement.models import EngagementEvent
from contacts.engagement.services import (
    ENGAGEMENT_BATCH_MAX,
)
from crm.api import CreatedCursorPagination, StrictModelPermissions, requires
from crm.exceptions import Conflict
from crm.jobs import delay, jobs_expire_stale
from crm.schema import ValidationErrorSerializer
from workflows.api.serializers import (
    EngagementBatchResultSerializer,
    EngagementBatchSerializer,
    SavingsQuerySerializer,
    SavingsReportSerializer,
    ScoreRecomputeResultSerializer,
    ScoringRuleSerializer,
    WorkflowRunRequestSerializer,
    WorkflowRunSerializer,
    WorkflowSerializer,
)
from workflows.filters import WorkflowRunFilter
from workflows.models import (
    RunTrigger,
    ScoringRule,
    Workflow,
    WorkflowRun,
    status_actions_refusal,
)
from workflows.runs import (
    workflow_run_approve,
    workflow_run_reject,
    workflow_run_request,
    workflow_run_resume,
)
from workflows.scoring import engagement_ingest_and_score
from workflows.selectors import savings_report
from workflows.services import (
    RunNotAllowed,
    WorkflowError,
    workflow_create,
    workflow_preview,
    workflow_update,
)
from workflows.tasks import recompute_scores as recompute_scores_task

CanRunWorkflows = requires("workflows.view_workflow", "workflows.run_workflow")
CanViewRuns = requires("workflows.view_workflowrun")
RUN_NOT_HELD = {409: OpenApiResponse(ValidationErrorSerializer, description="The run is not held.")}


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
        workflow = self.get_object()
        refusal = status_actions_refusal(request.user, workflow.actions)
        if refusal:
            raise PermissionDenied(refusal)
        try:
            run = workflow_run_request(
                workflow=workflow,
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
    filterset_class = WorkflowRunFilter

    @extend_schema(request=None, responses={200: WorkflowRunSerializer, **RUN_NOT_HELD})
    @action(detail=True, methods=["post"], permission_classes=[CanViewRuns])
    def approve(self, request, pk=None):
        """Release a held run (it then runs). Past the per-run limit: workflows.approve_run
        or billing.approve_overage; held by billing's guardrails: billing.approve_overage.
        403 without them, 409 when the run is not held."""
        return self._decide(workflow_run_approve)

    @extend_schema(request=None, responses={200: WorkflowRunSerializer, **RUN_NOT_HELD})
    @action(detail=True, methods=["post"], permission_classes=[CanViewRuns])
    def reject(self, request, pk=None):
        """Reject a held run: it never runs (workflows.approve_run or billing.approve_overage)."""
        return self._decide(workflow_run_reject)

    @extend_schema(
        request=None,
        responses={
            202: WorkflowRunSerializer,
            409: OpenApiResponse(description="A worker holds the run, or it is not failed."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[CanRunWorkflows])
    def resume(self, request, pk=None):
        """Queue a failed run again (its worker died, it stopped on an error, or it was never
        queued): it goes on from its cursor and does nothing twice. 409 while a worker holds
        it or when it is not failed."""
        try:
            run = workflow_run_resume(run=self.get_object())
        except WorkflowError as error:
            raise Conflict(str(error)) from error
        return Response(WorkflowRunSerializer(run).data, status=http.HTTP_202_ACCEPTED)

    def list(self, request, *args, **kwargs):
        jobs_expire_stale(model=WorkflowRun)  # running runs whose worker died
        return super().list(request, *args, **kwargs)

    def retrieve(self, request, *args, **kwargs):
        jobs_expire_stale(model=WorkflowRun, pk=self.get_object().pk)
        return super().retrieve(request, *args, **kwargs)

    def _decide(self, service):
        run = self.get_object()
        try:
            run = service(run=run, user=self.request.user)
        except RunNotAllowed as error:
            raise PermissionDenied(str(error)) from error
        except WorkflowError as error:
            raise Conflict(str(error)) from error
        return Response(WorkflowRunSerializer(run).data)

    def get_queryset(self):
        return WorkflowRun.objects.all()  # workflowrun_workflow_idx (workflow, -id)


# The engagement API composes the two apps, which is why it lives here: contacts stores
# the events and workflows scores the ones newly stored, in one transaction
# (`workflows.scoring.engagement_ingest_and_score`).


ENGAGEMENT_TAG = "engagement"


class EngagementEventsView(APIView):
    """POST /api/engagement-events/: a batch of events (needs contacts.add_engagementevent)."""

    queryset = EngagementEvent.objects.none()  # StrictModelPermissions: POST → add_*

    @extend_schema(
        tags=[ENGAGEMENT_TAG],
        summary="Ingest engagement events (batch)",
        description=f"Up to {ENGAGEMENT_BATCH_MAX:,} events; more is a 400 for the whole batch. "
        "Each event names its contact by `contact_id` or `email`, and carries an "
        "`external_id`: an id already stored (a retry), or repeated in the batch, is reported "
        "`duplicate` and stored once. Bad items (unknown contact, type, date, missing field) "
        "are reported `error` with messages; the good ones are stored. New events move the "
        "contact's `last_engaged_at` forward and add their scoring rules' points to its "
        "lead score.",
        request=EngagementBatchSerializer,
        responses={200: EngagementBatchResultSerializer},
    )
    def post(self, request):
        data = request.data
        items = data.get("events") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise ValidationError(
                {"events": ["Send a JSON object with a non-empty list `events`."]}
            )
        if len(items) > ENGAGEMENT_BATCH_MAX:
            raise ValidationError(
                {
                    "events": [
                        f"At most {ENGAGEMENT_BATCH_MAX:,} events a request; got {len(items):,}. "
                        "Split the batch."
                    ]
                }
            )
        batch, scored = engagement_ingest_and_score(items=items)
        # Plain dicts: a 10,000-item report through serializer fields costs more than the
        # ingestion itself; EngagementBatchResultSerializer documents the same shape.
        return Response(
            {
                "created": batch.created,
                "duplicates": batch.duplicates,
                "errors": batch.errors,
                "scored_contacts": scored,
                "items": [asdict(item) for item in batch.items],
            }
        )


@extend_schema(tags=[ENGAGEMENT_TAG])
class ScoringRuleViewSet(viewsets.ModelViewSet):
    """Scoring rules (model permissions on workflows.ScoringRule)."""

    queryset = ScoringRule.objects.order_by("event_type", "id")
    serializer_class = ScoringRuleSerializer
    pagination_class = None  # a handful of rules

    @extend_schema(
        summary="Recompute every lead score now",
        description="Rebuilds the scores from the events and the enabled rules, as the daily "
        "task does (the task `workflows.recompute_scores`: 202 with its id when workers run "
        "it, 200 with the result when tasks run in-process). `?dry_run=true` counts what "
        "would change. Needs workflows.change_scoringrule.",
        request=None,
        responses={
            200: ScoreRecomputeResultSerializer,
            202: OpenApiResponse(description='Queued on the workers: `{"task_id": …}`.'),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        permission_classes=[requires("workflows.change_scoringrule")],
    )
    def recompute(self, request):
        dry_run = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
        queued = delay(
            recompute_scores_task,
            dry_run=dry_run,
            what="The lead-score recompute",
            remedy="No score was touched: try again once the queue is back.",
        )
        if queued.ready():  # eager (no broker): the result is here
            return Response(queued.get())
        return Response({"task_id": queued.id}, status=202)


class SavingsReportView(APIView):
    """Marketing contacts that cannot be marketed to or are unengaged, and the saving."""

    permission_classes = [requires("workflows.view_savings")]

    @extend_schema(
        summary="Savings report",
        description="Marketing contacts without a pending change that are unsubscribed, hard "
        "bounced or unengaged (no engagement in `unengaged_days` days, created before that), "
        "per reason, and what setting them non-marketing now saves on a month's invoice from "
        "the next update date (minor units).",
        parameters=[SavingsQuerySerializer],
        responses=SavingsReportSerializer,
    )
    def get(self, request):
        query = SavingsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = savings_report(
            now=timezone.now(),
            unengaged_days=query.validated_data["unengaged_days"],
            price=billing_demotion_saving,
        )
        return Response(SavingsReportSerializer(asdict(report)).data)
