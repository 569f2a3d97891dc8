"""Routes of a completed trial's model file: the worker's upload (before it completes the
trial) and the users' download (`GET /api/v1/trials/{id}/model`), one
`torch.load(weights_only=True)`-safe file that `hpo.load_model` turns back into the module."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from hpo.protocol import ModelSaved
from service.api.auth import user_access, worker_access
from service.api.deps import IdPath, get_protocol
from service.domain.protocol import Protocol

router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(user_access)])
protocol_router = APIRouter(
    prefix="/api/v1/workers", tags=["worker protocol"], dependencies=[Depends(worker_access)]
)
ProtocolDep = Annotated[Protocol, Depends(get_protocol)]
LeaseToken = Annotated[str, Header(alias="X-Lease-Token", max_length=128)]
BINARY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def model_url(trial_id: int) -> str:
    """Where a kept model is downloaded."""
    return f"/api/v1/trials/{trial_id}/model"


@protocol_router.put(
    "/{worker_id}/trials/{trial_id}/model",
    response_model=ModelSaved,
    responses={
        409: {"description": "the lease token is stale: the trial is no longer this worker's"},
        507: {"description": "the artifacts folder cannot store it"},
    },
    openapi_extra=BINARY,
)
async def save_model(
    request: Request,
    protocol: ProtocolDep,
    worker_id: IdPath,
    trial_id: IdPath,
    token: LeaseToken,
) -> ModelSaved:
    """Upload the trial's model file (trainer.model_file) before completing it; `kept` false
    (nothing stored) when it cannot be among the models its study keeps."""
    body = await request.body()
    upload = await run_in_threadpool(protocol.models.save, trial_id, token, [body])
    return ModelSaved(
        trial_id=upload.trial_id, kept=upload.kept, model_id=upload.model_id, detail=upload.detail
    )


@router.get(
    "/trials/{trial_id}/model",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        404: {"description": "no model kept for this trial, and why (e.g. not among the best)"},
    },
)
def download_model(protocol: ProtocolDep, trial_id: IdPath) -> FileResponse:
    """The trial's model file: `torch.load(path, weights_only=True)` reads it and
    `hpo.load_model(path)` rebuilds the module (eval mode, raw inputs)."""
    path, trial, study = protocol.models.path(trial_id)
    name = f"{study}-trial-{trial.number}.pt"
    return FileResponse(path, media_type="application/octet-stream", filename=name)
