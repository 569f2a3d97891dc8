"""Response models of the web page's aggregate endpoints (/api/v1/dashboard/...), and the
functions that build them from the domain's dashboard dataclasses. Every float goes through
`FiniteNumber`: NaN and infinities are sent as null."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from service.api import serializers
from service.api.schemas import StudyPublic, TrialPublic
from service.domain.dashboard_table import TableRow


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


FiniteNumber = Annotated[float | None, BeforeValidator(_finite_or_none)]


class RungGroup(BaseModel):
    bracket: int
    rung: int
    counts: dict[str, int] = Field(description="trials now at this rung, in each trial state")
    best: FiniteNumber = Field(
        description="multi-fidelity: the best objective reported at this rung's epoch by the "
        "trials trained to it; otherwise the best objective among finished trials"
    )
    epochs: int | None = Field(
        default=None, description="multi-fidelity: the epochs a trial is trained to at this rung"
    )
    trained: int | None = Field(
        default=None,
        description="multi-fidelity: trials trained to this rung (at it now or promoted past it)",
    )
    promoted: int | None = Field(
        default=None, description="multi-fidelity: trials promoted past this rung"
    )


class DashboardStudy(BaseModel):
    study: StudyPublic
    last_event_id: int = Field(
        description="newest event of the study: pass as Last-Event-ID to follow from here"
    )
    metrics: list[str] = Field(description="metric names the trials report, the objective first")
    rungs: list[RungGroup] = Field(
        description="trials per bracket and rung (successive halving, Hyperband); other "
        "strategies have one group (0, 0)"
    )


class CurvePublic(BaseModel):
    trial_id: int
    number: int
    state: str
    value: FiniteNumber
    best: bool = Field(description="the study's best completed trial")
    points: list[tuple[int, FiniteNumber]] = Field(description="(epoch, value) of each report")


class BandPublic(BaseModel):
    trials: int = Field(description="how many trials the quantiles were taken over")
    epochs: list[int]
    low: list[FiniteNumber] = Field(description="10 % quantile per epoch")
    median: list[FiniteNumber]
    high: list[FiniteNumber] = Field(description="90 % quantile per epoch")


class CurvesPublic(BaseModel):
    metric: str
    total: int = Field(description="trials in the study")
    curves: list[CurvePublic]
    band: BandPublic | None = Field(description="set when some trials' curves are left out")


class HistoryPublic(BaseModel):
    metric: str
    direction: str
    total: int = Field(description="finished trials with a value (completed, pruned)")
    points: list[tuple[int, FiniteNumber, str]] = Field(description="(number, value, state)")
    best: list[tuple[int, FiniteNumber]] = Field(
        description="(number, value) where the best-so-far improved, over every trial"
    )


class AxisPublic(BaseModel):
    name: str
    kind: str = Field(description="numeric or categorical")
    low: FiniteNumber
    high: FiniteNumber
    log: bool
    choices: list[Any] | None


class LinePublic(BaseModel):
    number: int
    value: FiniteNumber
    values: list[Any] = Field(description="one per axis; null where the param was inactive")


class ParallelPublic(BaseModel):
    metric: str
    direction: str
    total: int = Field(description="trials compared: completed ones, or see `basis`")
    axes: list[AxisPublic]
    lines: list[LinePublic]
    basis: str | None = Field(
        default=None,
        description="multi-fidelity studies: the trials are compared at the first rung's epoch",
    )


class ImportancePublic(BaseModel):
    evaluator: str
    trials: int = Field(description="completed trials the importance was computed over")
    importances: list[tuple[str, FiniteNumber]] = Field(description="(param, share), largest first")
    note: str | None = Field(description="why there is no importance yet")
    basis: str | None = Field(
        default=None,
        description="multi-fidelity studies: the trials are compared at the first rung's epoch",
    )


class TableTrial(TrialPublic):
    duration_s: FiniteNumber = Field(description="start to finish, or to now while unfinished")


class TablePage(BaseModel):
    total: int = Field(description="trials matching the filter")
    offset: int
    limit: int
    items: list[TableTrial]


def table_trial(item: TableRow) -> TableTrial:
    row = item.row
    names = {} if row.worker_id is None or item.worker is None else {row.worker_id: item.worker}
    public = serializers.trial(row, names)
    return TableTrial(**dict(public), duration_s=item.duration_s)
