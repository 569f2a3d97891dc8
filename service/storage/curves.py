"""The learning curves: one row of metrics per (trial, epoch), as the worker reported them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hpo.protocol import TrialState
from service.storage import dialect, json_text
from service.storage.json_text import EncodedJSON
from service.storage.models import MetricRow, TrialRow


class CurveStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def has(self, trial_id: int, epoch: int) -> bool:
        return self.session.get(MetricRow, (trial_id, epoch)) is not None

    def add(self, trial_id: int, epoch: int, metrics: dict[str, float], at: datetime) -> None:
        self.session.add(MetricRow(trial_id=trial_id, epoch=epoch, metrics=metrics, reported_at=at))

    def add_once(self, trial_id: int, epoch: int, metrics: dict[str, float], at: datetime) -> bool:
        """Store the report of `epoch` unless the trial has one already (a repeated report
        keeps the first); whether this one was stored. One statement."""
        values = {"trial_id": trial_id, "epoch": epoch, "metrics": metrics, "reported_at": at}
        return dialect.insert_new(self.session, MetricRow.__table__, values)

    def add_new(
        self, reports: list[tuple[int, int, dict[str, float]]], at: datetime
    ) -> dict[tuple[int, int], EncodedJSON]:
        """Store each (trial id, epoch, metrics) whose trial has no report of that epoch yet,
        in one statement; the (trial id, epoch) of those stored (a repeat keeps the first),
        each with its metrics' stored JSON text, for an event to carry as it is (the
        metrics encoded once, not again in the event's payload)."""
        rows: list[dict[str, Any]] = []
        texts: dict[tuple[int, int], EncodedJSON] = {}
        last: tuple[dict[str, float], EncodedJSON] | None = None
        for trial_id, epoch, metrics in reports:
            if last is None or last[0] is not metrics:  # items sharing one dict: encoded once
                last = (metrics, json_text.encode(metrics))
            texts.setdefault((trial_id, epoch), last[1])
            rows.append(
                {"trial_id": trial_id, "epoch": epoch, "metrics": last[1], "reported_at": at}
            )
        stored = dialect.insert_new_rows(
            self.session, MetricRow.__table__, rows, ("trial_id", "epoch")
        )
        return {(trial_id, epoch): texts[trial_id, epoch] for trial_id, epoch in stored}

    def at(self, trial_id: int, epoch: int) -> dict[str, float] | None:
        """The metrics reported for `epoch`, or None when there is no such report."""
        row = self.session.get(MetricRow, (trial_id, epoch))
        return None if row is None else row.metrics

    def drop_after(self, trial_id: int, epoch: int) -> None:
        """Forget the reports after `epoch` (a trial that resumes from a checkpoint there)."""
        self.session.execute(
            delete(MetricRow).where(MetricRow.trial_id == trial_id, MetricRow.epoch > epoch)
        )

    def of_trial(self, trial_id: int) -> list[MetricRow]:
        query = select(MetricRow).where(MetricRow.trial_id == trial_id).order_by(MetricRow.epoch)
        return list(self.session.scalars(query))

    def of_trials(self, ids: Collection[int]) -> list[tuple[int, int, dict[str, Any]]]:
        """(trial id, epoch, metrics) of every report of the trials `ids`, by trial and epoch."""
        if not ids:
            return []
        rows = self.session.execute(
            select(MetricRow.trial_id, MetricRow.epoch, MetricRow.metrics)
            .where(MetricRow.trial_id.in_(ids))
            .order_by(MetricRow.trial_id, MetricRow.epoch)
        )
        return [(trial_id, epoch, metrics or {}) for trial_id, epoch, metrics in rows]

    def points_of(self, trial_id: int) -> list[tuple[int, dict[str, Any]]]:
        """(epoch, metrics) of every report of one trial, by epoch: `of_trials` for one, on
        the session's connection (a completion's curve for Optuna: half the CPU)."""
        rows = self.session.connection().execute(
            select(MetricRow.epoch, MetricRow.metrics)
            .where(MetricRow.trial_id == trial_id)
            .order_by(MetricRow.epoch)
        )
        return [(epoch, metrics or {}) for epoch, metrics in rows]

    def metrics_of(self, ids: Collection[int]) -> list[dict[str, Any]]:
        """The metrics of every report of the trials `ids`, in no particular order."""
        if not ids:
            return []
        query = select(MetricRow.metrics).where(MetricRow.trial_id.in_(ids))
        return [metrics or {} for metrics in self.session.scalars(query)]

    def at_epoch(
        self, study_id: int, epoch: int
    ) -> list[tuple[int, int, TrialState, dict[str, Any], int]]:
        """(trial id, number, state, metrics, epochs) of every trial of the study that reported
        `epoch`, with that epoch's metrics, by trial number."""
        rows = self.session.execute(
            select(TrialRow.id, TrialRow.number, TrialRow.state, MetricRow.metrics, TrialRow.epochs)
            .join(MetricRow, MetricRow.trial_id == TrialRow.id)
            .where(TrialRow.study_id == study_id, MetricRow.epoch == epoch)
            .order_by(TrialRow.number)
        )
        return [(i, number, state, m or {}, epochs) for i, number, state, m, epochs in rows]

    def by_bracket_at(
        self, study_id: int, epochs: Collection[int]
    ) -> list[tuple[int, int, dict[str, Any]]]:
        """(bracket, epoch, metrics) of every report of the study at one of `epochs`."""
        rows = self.session.execute(
            select(TrialRow.bracket, MetricRow.epoch, MetricRow.metrics)
            .join(MetricRow, MetricRow.trial_id == TrialRow.id)
            .where(TrialRow.study_id == study_id, MetricRow.epoch.in_(set(epochs)))
        )
        return [(bracket, epoch, metrics or {}) for bracket, epoch, metrics in rows]

    def member(
        self, study_id: int, ids: Collection[int] | None, metric: str
    ) -> list[tuple[int, Any]]:
        """(epoch, value of `metric`, None when missing) of every report of the trials `ids`
        (None: every trial of the study); read in SQL where the database can."""
        sql = dialect.json_member(self.session, MetricRow.metrics, metric)
        columns: tuple[Any, ...] = (MetricRow.metrics,) if sql is None else sql
        query = select(MetricRow.epoch, *columns)
        if ids is None:
            query = query.join(TrialRow, TrialRow.id == MetricRow.trial_id).where(
                TrialRow.study_id == study_id
            )
        else:
            query = query.where(MetricRow.trial_id.in_(ids))
        rows = self.session.execute(query).all()
        if sql is None:
            return [(epoch, (metrics or {}).get(metric)) for epoch, metrics in rows]
        return [(epoch, dialect.member_of(value, raw, metric)) for epoch, value, raw in rows]
