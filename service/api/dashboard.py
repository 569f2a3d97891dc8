"""Aggregate routes of the web page under /api/v1/dashboard: what a study page draws, sized for a
browser whatever the study's size (see service.domain.dashboard). Each answer carries a
`Server-Timing: app;dur=<ms>` header: the time spent in the route."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from service.api import dashboard_schemas as out
from service.api import serializers
from service.api.auth import user_access
from service.api.deps import IdPath, get_studies, services_of
from service.domain.dashboard import Dashboard
from service.domain.dashboard_params import ParamViews
from service.domain.dashboard_table import TableQuery, TrialTable
from service.domain.errors import InvalidInput
from service.domain.studies import Studies

router = APIRouter(
    prefix="/api/v1/dashboard", tags=["dashboard"], dependencies=[Depends(user_access)]
)
STUDY = "/studies/{study_id}"
NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "no such study"}}
T = TypeVar("T")


async def get_dashboard(request: Request) -> Dashboard:
    return Dashboard(services_of(request).db)


async def get_param_views(request: Request) -> ParamViews:
    return ParamViews(services_of(request).db)


async def get_table(request: Request) -> TrialTable:
    return TrialTable(services_of(request).db)


DashboardDep = Annotated[Dashboard, Depends(get_dashboard)]
ParamsDep = Annotated[ParamViews, Depends(get_param_views)]
TableDep = Annotated[TrialTable, Depends(get_table)]
StudiesDep = Annotated[Studies, Depends(get_studies)]


def timed(response: Response, build: Callable[[], T]) -> T:
    """Run `build` and report its duration in the Server-Timing header."""
    began = time.perf_counter()
    result = build()
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.1f}"
    return result


def _query_errors(build: Callable[[], T]) -> T:
    """The domain's InvalidInput about a query parameter as a 422 located in the query."""
    try:
        return build()
    except InvalidInput as exc:
        detail = [{"loc": ["query", *exc.loc], "msg": exc.msg, "type": "value_error"}]
        raise HTTPException(status_code=422, detail=detail) from exc


@router.get(STUDY, response_model=out.DashboardStudy, responses=NOT_FOUND)
def study_overview(
    study_id: IdPath, studies: StudiesDep, dashboard: DashboardDep, response: Response
) -> out.DashboardStudy:
    """The study (as GET /studies/{id}), the event id to follow the stream from, the metric
    names and the trials per bracket and rung."""

    def build() -> out.DashboardStudy:
        overview = dashboard.overview(study_id)  # first: events after it are not missed
        study = serializers.study(studies.get(study_id))
        rungs = [out.RungGroup.model_validate(r, from_attributes=True) for r in overview.rungs]
        return out.DashboardStudy(
            study=study, last_event_id=overview.last_event_id, metrics=overview.metrics, rungs=rungs
        )

    return timed(response, build)


@router.get(STUDY + "/curves", response_model=out.CurvesPublic, responses=NOT_FOUND)
def curves(
    study_id: IdPath,
    dashboard: DashboardDep,
    response: Response,
    metric: Annotated[
        str | None, Query(min_length=1, max_length=256, description="default: the objective")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="curves sent in full")] = 100,
) -> out.CurvesPublic:
    """Learning curves of at most `limit` trials: the 20 best, the running ones, an even spread
    of the others; with a per-epoch 10/50/90 % band over up to 500 trials when some are left
    out."""
    result = timed(response, lambda: dashboard.curves(study_id, metric, limit))
    return out.CurvesPublic.model_validate(result, from_attributes=True)


@router.get(STUDY + "/history", response_model=out.HistoryPublic, responses=NOT_FOUND)
def history(
    study_id: IdPath,
    dashboard: DashboardDep,
    response: Response,
    limit: Annotated[int, Query(ge=10, le=20_000, description="points sent at most")] = 2000,
) -> out.HistoryPublic:
    """Objective per finished trial (every best-so-far record kept when thinned) and the exact
    best-so-far steps."""
    result = timed(response, lambda: dashboard.history(study_id, limit))
    return out.HistoryPublic.model_validate(result, from_attributes=True)


@router.get(STUDY + "/parallel", response_model=out.ParallelPublic, responses=NOT_FOUND)
def parallel(
    study_id: IdPath,
    views: ParamsDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=5000, description="trials sent at most")] = 500,
) -> out.ParallelPublic:
    """Parallel coordinates: one axis per parameter, one line per completed trial sent."""
    result = timed(response, lambda: views.parallel(study_id, limit))
    return out.ParallelPublic.model_validate(result, from_attributes=True)


@router.get(STUDY + "/importance", response_model=out.ImportancePublic, responses=NOT_FOUND)
def importance(
    study_id: IdPath,
    views: ParamsDep,
    response: Response,
    limit: Annotated[int, Query(ge=2, le=5000, description="completed trials used")] = 500,
) -> out.ImportancePublic:
    """Parameter importance (Optuna's PED-ANOVA evaluator) over a spread of completed trials.
    The first call in a server process also imports optuna.importance (about a second)."""
    result = timed(response, lambda: views.importance(study_id, limit))
    return out.ImportancePublic.model_validate(result, from_attributes=True)


@router.get(
    STUDY + "/trials",
    response_model=out.TablePage,
    responses={**NOT_FOUND, 422: {"description": "unknown sort, state or filter token"}},
)
def trial_table(
    study_id: IdPath,
    table: TableDep,
    response: Response,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    sort: Annotated[
        str,
        Query(
            max_length=200,
            description="number, state, value, epochs, worker, started_at, finished_at, "
            "bracket, rung, duration or param:<name>",
        ),
    ] = "number",
    order: Literal["asc", "desc"] = "asc",
    state: Annotated[
        str, Query(max_length=200, description="comma-separated trial states to keep")
    ] = "",
    q: Annotated[
        str,
        Query(max_length=500, description="tokens, all must match: #12, name=value, or text"),
    ] = "",
    bracket: Annotated[int | None, Query(ge=0, le=1000)] = None,
    rung: Annotated[int | None, Query(ge=0, le=1000, description="trials now at this rung")] = None,
    reached: Annotated[
        int | None,
        Query(ge=0, le=1000, description="trials that reached this rung (at it or promoted past)"),
    ] = None,
) -> out.TablePage:
    """One page of the study's trials, sorted and filtered, with the total that match."""
    query = TableQuery(
        offset=offset,
        limit=limit,
        sort=sort,
        descending=order == "desc",
        states=tuple(s.strip() for s in state.split(",") if s.strip()),
        text=q,
        bracket=bracket,
        rung=rung,
        reached=reached,
    )
    page = timed(response, lambda: _query_errors(lambda: table.page(study_id, query)))
    return out.TablePage(
        total=page.total,
        offset=page.offset,
        limit=page.limit,
        items=[out.table_trial(item) for item in page.items],
    )
