"""A study's trials as export records, read a page at a time so that a study of any size is
exported in bounded memory (the routes of `service.api.exports` stream them as CSV or JSON Lines).

A record is one trial: its fields as `GET /api/v1/studies/{id}/trials` gives them, the wall time
from start to finish, the training time (the sum of its reported `epoch_seconds`), and the
metrics of its last reported epoch (its final metrics), with its held-out test metrics among
them where the worker sent them: `test_accuracy` and `test_loss`, or `test_unavailable` saying
why there is no number. A multi-objective study's trials also carry their objective values (the
values Optuna was told and the Pareto set is computed from) by metric name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.domain.errors import NotFound
from service.storage.db import Database
from service.storage.models import TrialRow
from service.storage.unit import reading

PAGE = 500


@dataclass(frozen=True)
class TrialRecord:
    row: TrialRow
    worker: str | None
    final_metrics: dict[str, Any]
    train_seconds: float | None

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from the trial's first lease to its end (docs/web.md, "A trial's start
        and duration"); None while it has not ended."""
        row = self.row
        if row.started_at is None or row.finished_at is None:
            return None
        return (row.finished_at - row.started_at).total_seconds()


@dataclass(frozen=True)
class Columns:
    """The parameter and metric names that occur in a study's trials, sorted."""

    params: list[str]
    metrics: list[str]
    # A multi-objective study's objective metrics in the spec's order (a trial's `values`).
    objectives: list[str]


def objective_values(objectives: list[str], record: TrialRecord) -> dict[str, Any]:
    """A trial's objective values by metric name; empty for a single-objective study."""
    return dict(zip(objectives, record.row.values or [], strict=False))


class Exports:
    def __init__(self, db: Database, page_size: int = PAGE) -> None:
        self.db = db
        self.page_size = page_size

    def study_name(self, study_id: int) -> str:
        """The study's name; NotFound when there is no such study."""
        with reading(self.db) as stores:
            study = stores.studies.get(study_id)
            if study is None:
                raise NotFound(f"study {study_id} not found")
            return study.name

    def _spec(self, study_id: int) -> dict[str, Any]:
        with reading(self.db) as stores:
            study = stores.studies.get(study_id)
            return study.spec if study is not None else {}

    def objectives(self, study_id: int) -> list[str]:
        """A multi-objective study's objective metrics in the spec's order; empty otherwise."""
        return [o["metric"] for o in self._spec(study_id).get("objectives") or []]

    def columns(self, study_id: int) -> Columns:
        """Every parameter name of the study's space and trials, and every final-metric name
        (a pass over the trials, keeping only the names)."""
        spec = self._spec(study_id)
        params, metrics = set(spec.get("space") or {}), set[str]()
        for record in self.records(study_id):
            params.update(record.row.params or {})
            metrics.update(record.final_metrics)
        objectives = [o["metric"] for o in spec.get("objectives") or []]
        return Columns(sorted(params), sorted(metrics), objectives)

    def records(self, study_id: int) -> Iterator[TrialRecord]:
        """The study's trials by number, each page read in its own short transaction."""
        after: int | None = None
        while True:
            with reading(self.db) as stores:
                rows = stores.trials.page(study_id, after, self.page_size)
                workers = stores.workers.names({r.worker_id for r in rows})
                curves = stores.curves.of_trials([r.id for r in rows])
            final: dict[int, dict[str, Any]] = {}
            seconds: dict[int, float] = {}
            for trial_id, _epoch, metrics in curves:  # by trial and epoch: the last one wins
                final[trial_id] = metrics
                if isinstance(metrics.get("epoch_seconds"), int | float):
                    seconds[trial_id] = seconds.get(trial_id, 0.0) + metrics["epoch_seconds"]
            for row in rows:
                worker = workers.get(row.worker_id) if row.worker_id is not None else None
                metrics = {**final.get(row.id, {}), **held_out_columns(row.test_metrics)}
                yield TrialRecord(row, worker, metrics, seconds.get(row.id))
            if len(rows) < self.page_size:
                return
            after = rows[-1].number


def held_out_columns(test_metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A trial's held-out test metrics as export metrics: `test_accuracy` and `test_loss`, or
    `test_unavailable` (why there is no number); none when its worker sent none."""
    if not test_metrics:
        return {}
    if "unavailable" in test_metrics:
        return {"test_unavailable": test_metrics["unavailable"]}
    return {k: v for k, v in test_metrics.items() if k in ("test_accuracy", "test_loss")}
