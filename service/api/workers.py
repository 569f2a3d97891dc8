"""Routes of the worker protocol under /api/v1/workers (register, lease, heartbeat, report,
complete, fail, release) and the workers list."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from hpo.protocol import (
    Decision,
    HeartbeatResponse,
    LeaseGrant,
    ReportBatchResponse,
    ReportResponse,
    TrialDecision,
    TrialReport,
    WorkerRegistered,
)
from service.api import errors, schemas, serializers
from service.api.auth import user_access, worker_access
from service.api.deps import IdPath, get_protocol, get_settings
from service.domain.errors import DomainError
from service.domain.protocol import Protocol
from service.settings import Settings
from service.storage.models import utcnow

# The workers list is for users; the protocol for workers (and users).
router = APIRouter(prefix="/api/v1/workers", tags=["workers"], dependencies=[Depends(user_access)])
protocol_router = APIRouter(
    prefix="/api/v1/workers", tags=["worker protocol"], dependencies=[Depends(worker_access)]
)
ProtocolDep = Annotated[Protocol, Depends(get_protocol)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
# The worker id in a trial's paths is validated like any id but not read: the lease token, not
# the worker id, proves which worker holds the trial (the protocol's reporting part takes none).
TRIAL = "/{worker_id}/trials/{trial_id}"
STALE: dict[int | str, dict[str, Any]] = {
    409: {"description": "the lease token is stale: the trial is no longer this worker's"}
}


# The batched report's body as documented: the route reads it itself (see `reports`).
BATCH_SCHEMA = schemas.inline_schema(schemas.ReportBatchRequest)


def answer(model: BaseModel) -> Response:
    """The JSON of an answer built here from the protocol's own models, as FastAPI would write
    it for the route's `response_model` (which still documents it): FastAPI would validate it
    again first, in a second thread-pool hop for a sync route. For the calls every trial makes
    (lease, heartbeat, report, complete)."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("", response_model=list[schemas.WorkerPublic])
def list_workers(protocol: ProtocolDep, settings: SettingsDep) -> list[schemas.WorkerPublic]:
    """Every registered worker (one per device process), its trials and heartbeat age."""
    now = utcnow()
    return [
        serializers.worker(row, trials, now, settings.stale_worker_seconds)
        for row, trials in protocol.leasing.list_workers()
    ]


@protocol_router.post(
    "/register",
    response_model=WorkerRegistered,
    status_code=201,
)
def register(
    protocol: ProtocolDep, settings: SettingsDep, body: schemas.WorkerRegister
) -> WorkerRegistered:
    row = protocol.leasing.register(
        body.name, body.host, body.pid, body.device, body.capabilities.model_dump()
    )
    return WorkerRegistered(
        worker_id=row.id,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.lease_seconds / 3,
    )


@protocol_router.post("/{worker_id}/deregister", status_code=204)
def deregister(protocol: ProtocolDep, worker_id: IdPath) -> Response:
    protocol.leasing.deregister(worker_id)
    return Response(status_code=204)


@protocol_router.post("/{worker_id}/lease", response_model=LeaseGrant)
def lease(
    protocol: ProtocolDep, settings: SettingsDep, worker_id: IdPath, body: schemas.LeaseRequest
) -> Response:
    """Up to `count` trials to train; an empty list when there is no work right now."""
    granted = protocol.leasing.lease(worker_id, body.count, body.held, ahead=body.ahead)
    seconds = settings.report_interval_seconds
    return answer(LeaseGrant(assignments=[serializers.assignment(a, seconds) for a in granted]))


@protocol_router.post(
    "/{worker_id}/heartbeat",
    response_model=HeartbeatResponse,
)
def heartbeat(protocol: ProtocolDep, worker_id: IdPath, body: schemas.HeartbeatRequest) -> Response:
    """Renew the leases; each answers `continue`, or `stop` when the trial is not ours."""
    decisions = protocol.leasing.heartbeat(worker_id, [(x.trial_id, x.token) for x in body.leases])
    return answer(
        HeartbeatResponse(
            decisions=[TrialDecision(trial_id=t, decision=d) for t, d in decisions.items()]
        )
    )


@protocol_router.post(
    TRIAL + "/report",
    response_model=ReportResponse,
    responses=STALE,
)
def report(
    protocol: ProtocolDep, worker_id: IdPath, trial_id: IdPath, body: schemas.ReportRequest
) -> Response:
    """Store an epoch's metrics (idempotent per epoch): `continue`, `prune`, `pause` or `stop`."""
    decision = protocol.reporting.report(trial_id, body.token, body.epoch, body.metrics)
    return answer(ReportResponse(decision=decision))


@protocol_router.post(
    "/{worker_id}/reports",
    response_model=ReportBatchResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BATCH_SCHEMA}},
        }
    },
)
async def reports(request: Request, protocol: ProtocolDep, worker_id: IdPath) -> Response:
    """Several trials' epoch reports in one request, answered item by item in order: each a
    decision (`continue`, `prune`, `pause`, `stop`), or the status and detail the single
    report would have answered (409 stale token, 404 no such trial), that item unchanged.

    The body is read and checked here (`schemas.report_batch`: the bytes validated once)
    rather than by FastAPI (Python's JSON parser, then a check of each raw value), and the
    answer is written from the domain's outcomes directly: of the server's time on a batch of
    128 these took about 3 ms. The storage work runs in the thread pool, as a sync route's.
    A request this route would take is answered before routing, with the same steps, by
    `report_path.BatchedReports`; this route answers the others (and documents them all)."""
    items = schemas.report_batch(await request.body())
    outcomes = await run_in_threadpool(protocol.reporting.report_many, items)
    return Response(batch_answer(items, outcomes), media_type="application/json")


def batch_answer(items: list[TrialReport], outcomes: list[Decision | DomainError]) -> bytes:
    """The batched report's answer (a ReportBatchResponse's JSON) to `items`, from the
    domain's `outcomes` directly; also written by `report_path.BatchedReports`."""
    results = [
        {"trial_id": item.trial_id, "status": 200, "decision": outcome.value, "detail": None}
        if isinstance(outcome, Decision)
        else {
            "trial_id": item.trial_id,
            "status": errors.status_of(outcome),
            "decision": None,
            "detail": str(outcome),
        }
        for item, outcome in zip(items, outcomes, strict=True)
    ]
    # The fields of ReportOutcome, in its order (tests/service/api/test_report_batch_api.py
    # parses the answer into ReportBatchResponse).
    body = json.dumps({"results": results}, separators=(",", ":"), allow_nan=False)
    return body.encode()


@protocol_router.post(
    TRIAL + "/complete",
    response_model=schemas.CompletedTrial,
    responses=STALE,
)
def complete(
    protocol: ProtocolDep,
    settings: SettingsDep,
    worker_id: IdPath,
    trial_id: IdPath,
    body: schemas.CompleteRequest,
) -> Response:
    """The trial trained all its epochs. With `lease` above 0 the answer also carries the
    worker's next trials (as a lease would), so a busy worker needs one request, not two.
    `reports` (its last epochs) are recorded first, as the report route records them; when
    their answer ends the trial (`prune`, `pause`) it is not completed and the answer's
    `state` says what it is."""
    test = body.test_metrics.shown() if body.test_metrics is not None else None
    reports = [(r.epoch, r.metrics) for r in body.reports]
    completed = protocol.reporting.complete(trial_id, body.token, test, reports)
    granted = protocol.leasing.lease(worker_id, body.lease, body.held) if body.lease else []
    seconds = settings.report_interval_seconds
    assignments = [serializers.assignment(a, seconds) for a in granted]
    return answer(serializers.completed_trial(completed, assignments))


@protocol_router.post(
    TRIAL + "/fail",
    response_model=schemas.TrialPublic,
    responses=STALE,
)
def fail(
    protocol: ProtocolDep, worker_id: IdPath, trial_id: IdPath, body: schemas.FailRequest
) -> schemas.TrialPublic:
    return serializers.trial(protocol.reporting.fail(trial_id, body.token, body.reason), {})


@protocol_router.post(
    TRIAL + "/release",
    response_model=schemas.TrialPublic,
    responses=STALE,
)
def release(
    protocol: ProtocolDep, worker_id: IdPath, trial_id: IdPath, body: schemas.TokenRequest
) -> schemas.TrialPublic:
    """Give an unfinished trial back (the worker is shutting down); it is queued again."""
    return serializers.trial(protocol.reporting.release(trial_id, body.token), {})


LeaseToken = Annotated[str, Header(alias="X-Lease-Token", max_length=128)]


@protocol_router.put(
    TRIAL + "/checkpoint",
    response_model=schemas.CheckpointSaved,
    responses={**STALE, 507: {"description": "the artifacts folder cannot store it"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def save_checkpoint(
    request: Request,
    protocol: ProtocolDep,
    worker_id: IdPath,
    trial_id: IdPath,
    token: LeaseToken,
    epoch: Annotated[int, Query(ge=1, le=1_000_000, description="epochs trained so far")],
) -> schemas.CheckpointSaved:
    """Store the trial's checkpoint (the body, any bytes); the previous one is removed."""
    body = await request.body()
    trial = await run_in_threadpool(
        protocol.reporting.save_checkpoint, trial_id, token, epoch, [body]
    )
    assert trial.checkpoint_id is not None
    return schemas.CheckpointSaved(
        trial_id=trial.id, checkpoint_id=trial.checkpoint_id, epoch=trial.checkpoint_epoch
    )


@protocol_router.get(
    TRIAL + "/checkpoints/{checkpoint_id}",
    response_class=FileResponse,
    responses={
        **STALE,
        200: {"content": {"application/octet-stream": {}}},
        404: {"description": "no such checkpoint for this trial"},
    },
)
def load_checkpoint(
    protocol: ProtocolDep,
    worker_id: IdPath,
    trial_id: IdPath,
    checkpoint_id: str,
    token: LeaseToken,
) -> FileResponse:
    """The trial's checkpoint, for the worker that leased the trial to resume it."""
    path = protocol.reporting.checkpoint_path(trial_id, token, checkpoint_id)
    return FileResponse(path, media_type="application/octet-stream")
