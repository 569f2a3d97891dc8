"""Routes of /api/v1/studies and /api/v1/trials."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Query, Request, Response

from service.api import schemas, serializers
from service.api.auth import user_access
from service.api.deps import IdPath, get_studies
from service.api.schemas import MAX_ID, inline_schema
from service.domain.errors import InvalidInput
from service.domain.spec import SpecDocumentError, StudySpec, load_spec_document
from service.domain.studies import Studies

router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(user_access)])
StudiesDep = Annotated[Studies, Depends(get_studies)]

MAX_SPEC_BYTES = 1_000_000


_SPEC_SCHEMA = inline_schema(StudySpec)
_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "A study spec (see docs/spec.md), as JSON or YAML.",
        "content": {
            "application/json": {"schema": _SPEC_SCHEMA},
            "application/yaml": {"schema": _SPEC_SCHEMA},
        },
    }
}


async def spec_document(request: Request) -> dict[str, Any]:
    """The request body as a spec mapping: JSON, or YAML when the content type says so."""
    body = await request.body()
    if len(body) > MAX_SPEC_BYTES:
        raise InvalidInput((), f"the spec is larger than {MAX_SPEC_BYTES} bytes")
    try:
        if "yaml" in request.headers.get("content-type", ""):
            return load_spec_document(body.decode("utf-8"))
        document = json.loads(body)
    except (SpecDocumentError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput((), f"the body is not a valid spec document: {exc}") from exc
    except yaml.YAMLError as exc:  # pragma: no cover - load_spec_document wraps these
        raise InvalidInput((), f"the body is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidInput((), "the spec must be a mapping (a JSON object)")
    return document


@router.post(
    "/studies",
    status_code=201,
    response_model=schemas.StudyPublic,
    openapi_extra=_SPEC_BODY,
    responses={
        409: {"description": "a study with this name exists"},
        422: {"description": "the spec is invalid: `detail` names each field"},
    },
)
def create_study(
    studies: StudiesDep, document: Annotated[dict[str, Any], Depends(spec_document)]
) -> schemas.StudyPublic:
    return serializers.study(studies.create(document))


@router.get("/studies", response_model=list[schemas.StudyPublic])
def list_studies(studies: StudiesDep) -> list[schemas.StudyPublic]:
    """Every study, newest first."""
    return [serializers.study(view) for view in studies.list()]


@router.get("/studies/{study_id}", response_model=schemas.StudyPublic)
def get_study(studies: StudiesDep, study_id: IdPath) -> schemas.StudyPublic:
    return serializers.study(studies.get(study_id))


@router.get("/studies/{study_id}/trials", response_model=schemas.TrialPage)
def list_trials(
    studies: StudiesDep,
    study_id: IdPath,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        int | None, Query(ge=-1, le=MAX_ID, description="cursor from the previous page")
    ] = None,
) -> schemas.TrialPage:
    return serializers.trial_page(studies.trials(study_id, limit=limit, after=after))


@router.get("/trials/{trial_id}", response_model=schemas.TrialDetail)
def get_trial(studies: StudiesDep, trial_id: IdPath) -> schemas.TrialDetail:
    return serializers.trial_detail(studies.trial(trial_id))


@router.post("/studies/{study_id}/stop", response_model=schemas.StudyPublic)
def stop_study(studies: StudiesDep, study_id: IdPath) -> schemas.StudyPublic:
    """No new trials; running trials pause at their next report."""
    return serializers.study(studies.stop(study_id))


@router.post("/studies/{study_id}/resume", response_model=schemas.StudyPublic)
def resume_study(studies: StudiesDep, study_id: IdPath) -> schemas.StudyPublic:
    return serializers.study(studies.resume(study_id))


@router.patch("/studies/{study_id}", response_model=schemas.StudyPublic)
def patch_study(
    studies: StudiesDep, study_id: IdPath, patch: schemas.StudyPatch
) -> schemas.StudyPublic:
    """Change the budget (raising `max_trials` of a finished study continues it) and add
    `initial` configurations that run next."""
    if patch.budget is None and not patch.initial:
        raise InvalidInput((), "a patch changes the budget, adds initial configurations, or both")
    if patch.initial:
        view = studies.add_initial(study_id, patch.initial)
    if patch.budget is not None:
        budget = patch.budget
        view = studies.patch_budget(study_id, budget.max_trials, budget.parallel_trials)
    return serializers.study(view)


@router.delete("/studies/{study_id}", status_code=204)
def delete_study(studies: StudiesDep, study_id: IdPath) -> Response:
    studies.delete(study_id)
    return Response(status_code=204)
