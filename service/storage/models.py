"""SQLAlchemy models of the service's own tables (prefix `hpo_`; Optuna's tables live beside them).

Optuna holds the search state (trials, params, intermediate values) so that its samplers and
`optuna-dashboard` see everything. These tables hold what Optuna has no place for: the spec, the
study's life cycle, leases, workers, every metric of every epoch, and the event log that the
page follows.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from hpo.protocol import StudyState, TrialState, WorkerState

E = TypeVar("E", bound=Enum)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class JSONText(TypeDecorator[Any]):
    """JSON stored as text, keeping NaN and infinities exactly (JSON columns refuse them)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


class FiniteFloat(TypeDecorator[float]):
    """A float column that stores NaN as NULL everywhere (SQLite would do so silently anyway)."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Dialect) -> float | None:
        if value is None or math.isnan(value):
            return None
        return value


class StateColumn(TypeDecorator[E]):
    """An enum stored as its string value in a VARCHAR(16): the column holds the same strings
    as before it was typed (no migration), and Python code sees enum members only. Binding a
    value that is not one of the enum's raises ValueError before it reaches the database."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else str(self.enum(value).value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "hpo_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONText)
    state: Mapped[StudyState] = mapped_column(StateColumn(StudyState), index=True)
    optuna_study_id: Mapped[int | None] = mapped_column(Integer)
    # Trials created so far: the next trial's number. Bumped under the study's row lock.
    n_trials: Mapped[int] = mapped_column(Integer, default=0)
    max_trials: Mapped[int] = mapped_column(Integer)
    parallel_trials: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When this study last got a trial leased: the fair-share tie-breaker between studies.
    last_leased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkerRow(Base):
    __tablename__ = "hpo_workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    # Plugin model / dataset / training-function names this worker can run.
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    state: Mapped[WorkerState] = mapped_column(StateColumn(WorkerState), default=WorkerState.ACTIVE)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrialRow(Base):
    __tablename__ = "hpo_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_hpo_trials_study_number"),
        Index("ix_hpo_trials_study_state", "study_id", "state"),
        Index("ix_hpo_trials_state_expiry", "state", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[TrialState] = mapped_column(StateColumn(TrialState))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    value: Mapped[float | None] = mapped_column(FiniteFloat)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_workers.id", ondelete="SET NULL"), index=True
    )
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    # Multi-fidelity: the bracket and rung the trial is in, and the epoch its rung ends at
    # (null: the study's full budget.epochs).
    bracket: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rung: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    target_epochs: Mapped[int | None] = mapped_column(Integer)
    # The latest checkpoint (an artifact id made by the server) and the epoch it was taken at.
    checkpoint_id: Mapped[str | None] = mapped_column(String(32))
    checkpoint_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The held-out test split's metrics of the trial's final model (never used for selection),
    # or {"unavailable": why} when its dataset has none.
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    # The kept final model of a completed trial (an artifact id made by the server).
    model_id: Mapped[str | None] = mapped_column(String(32))
    # Multi-objective studies: one value per objective, in the spec's order.
    values: Mapped[list[float] | None] = mapped_column(JSONText)


class MetricRow(Base):
    __tablename__ = "hpo_trial_metrics"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_trials.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONText)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventRow(Base):
    """Append-only log of what happened to a study; the page's event stream reads it by id."""

    __tablename__ = "hpo_events"
    __table_args__ = (Index("ix_hpo_events_study_id_id", "study_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    trial_id: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
