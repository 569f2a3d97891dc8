"""Aggregates for the web page: learning curves with per-epoch bands, optimization history and
the study's metric names, plus the ranking and sampling helpers that `dashboard_params` shares.

Every function reads one study and returns plain dataclasses sized for a browser, whatever the
study's size: at most `limit` curves or points are returned in full (the best trials, the running
ones and an evenly spread sample of the others), and what is left out is summarized (the
best-so-far line is exact; curve bands are quantiles over a spread sample of trials). Values are
the floats stored, NaN and infinities included: the API layer turns them into null.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

import numpy as np

from hpo.protocol import TrialState
from service.domain import search
from service.domain.errors import NotFound
from service.domain.spec import Objective
from service.storage.db import Database
from service.storage.models import StudyRow
from service.storage.unit import Stores, reading

T = TypeVar("T")
COMPLETED, RUNNING = TrialState.COMPLETED, TrialState.RUNNING
FINISHED_WITH_VALUE = (COMPLETED, TrialState.PRUNED)
BAND_QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class Facts:
    """The few columns of a trial that ranking and sampling need."""

    id: int
    number: int
    state: TrialState
    value: float | None
    epochs: int

    @property
    def score(self) -> float:
        """The value as a float (NaN when there is none), for trials known to have one."""
        return math.nan if self.value is None else self.value


@dataclass(frozen=True)
class RungGroup:
    """One (bracket, rung): `counts` of the trials now at it by state. For successive halving
    and Hyperband also the rung's `epochs`, the trials `trained` to it (every trial that reached
    it, including those promoted past it), how many were `promoted` past it, and `best`, the best
    objective any of them reported at its epoch. Other strategies have one group (0, 0) whose
    `best` is the best finished value."""

    bracket: int
    rung: int
    counts: dict[str, int]
    best: float | None
    epochs: int | None = None
    trained: int | None = None
    promoted: int | None = None


@dataclass(frozen=True)
class Overview:
    last_event_id: int
    metrics: list[str]
    rungs: list[RungGroup]


@dataclass(frozen=True)
class Curve:
    trial_id: int
    number: int
    state: TrialState
    value: float | None
    best: bool
    points: list[tuple[int, float | None]]


@dataclass(frozen=True)
class Band:
    """Quantiles (10 %, 50 %, 90 %) of the metric per epoch over `trials` sampled trials."""

    trials: int
    epochs: list[int]
    low: list[float | None]
    median: list[float | None]
    high: list[float | None]


@dataclass(frozen=True)
class Curves:
    metric: str
    total: int
    curves: list[Curve]
    band: Band | None


@dataclass(frozen=True)
class History:
    metric: str
    direction: str
    total: int
    points: list[tuple[int, float, TrialState]]
    best: list[tuple[int, float]]


# -- selection helpers ------------------------------------------------------------------------


def is_number(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def spread(items: Sequence[T], k: int) -> list[T]:
    """`k` items evenly spaced over `items` (all of them when k >= len), order kept."""
    n = len(items)
    if k >= n:
        return list(items)
    if k <= 0:
        return []
    return [items[(i * n) // k] for i in range(k)]


def best_completed(facts: Sequence[Facts], maximize: bool, k: int) -> list[Facts]:
    """The `k` best completed trials with a finite value, best first (ties: lower number)."""
    scored = (f for f in facts if f.state == COMPLETED and is_number(f.value))
    sign = -1.0 if maximize else 1.0
    return heapq.nsmallest(k, scored, key=lambda f: (sign * f.score, f.number))


def pick(facts: Sequence[Facts], best: Sequence[Facts], limit: int) -> list[Facts]:
    """At most `limit` of `facts`: `best` first, then the running ones (up to a quarter of
    `limit`), then an even spread of the rest; in number order."""
    chosen = {f.id: f for f in best[:limit]}
    running = [f for f in facts if f.state == RUNNING and f.id not in chosen]
    chosen.update((f.id, f) for f in running[: max(0, min(limit // 4, limit - len(chosen)))])
    rest = [f for f in facts if f.id not in chosen]
    chosen.update((f.id, f) for f in spread(rest, limit - len(chosen)))
    return sorted(chosen.values(), key=lambda f: f.number)


def best_so_far(facts: Sequence[Facts], maximize: bool) -> list[tuple[int, float]]:
    """(number, value) of every completed trial that improved on all completed before it."""
    records: list[tuple[int, float]] = []
    for f in facts:
        if f.state != COMPLETED or not is_number(f.value):
            continue
        value = f.score
        if not records or (value > records[-1][1] if maximize else value < records[-1][1]):
            records.append((f.number, value))
    return records


def quantile_band(pairs: Sequence[tuple[int, Any]], trials: int) -> Band:
    """Per-epoch quantiles of the finite values among (epoch, value) pairs."""
    by_epoch: dict[int, list[float]] = {}
    for epoch, value in pairs:
        if isinstance(value, int | float) and math.isfinite(value):
            by_epoch.setdefault(epoch, []).append(float(value))
    epochs = sorted(by_epoch)
    qs = [np.quantile(np.asarray(by_epoch[e]), BAND_QUANTILES).tolist() for e in epochs]
    return Band(
        trials=trials,
        epochs=epochs,
        low=[q[0] for q in qs],
        median=[q[1] for q in qs],
        high=[q[2] for q in qs],
    )


# -- the aggregates ---------------------------------------------------------------------------


class Dashboard:
    """Read-only aggregates of one study for the web page."""

    def __init__(self, db: Database, band_trials: int = 500) -> None:
        self.db = db
        self.band_trials = band_trials

    def overview(self, study_id: int) -> Overview:
        """The newest event id (where the page's event stream starts), the metric names the
        trials report (the objective first) and the trials per bracket and rung."""
        with reading(self.db) as stores:
            study = load_study(stores, study_id)
            last = stores.events.last_id(study_id)
            return Overview(last, _metric_names(stores, study), _rungs(stores, study))

    def curves(self, study_id: int, metric: str | None, limit: int, top: int = 20) -> Curves:
        """Learning curves of at most `limit` trials (see `pick`) for `metric` (default: the
        objective), and when some are left out, the per-epoch band over a sample of all."""
        with reading(self.db) as stores:
            study = load_study(stores, study_id)
            objective = objective_of(study)
            metric = metric or objective.metric
            facts = _facts(stores, study_id)
            best = best_completed(facts, objective.maximize, top)
            chosen = pick(facts, best, limit)
            points = _points(stores, [f.id for f in chosen], metric)
            band = None
            if len(chosen) < len(facts):
                band = self._band(stores, study_id, facts, metric)
        best_id = best[0].id if best else None
        curves = [
            Curve(f.id, f.number, f.state, f.value, f.id == best_id, points.get(f.id, []))
            for f in chosen
        ]
        return Curves(metric=metric, total=len(facts), curves=curves, band=band)

    def history(self, study_id: int, limit: int) -> History:
        """Objective of finished trials (completed, pruned) by number, at most `limit` of them
        (every best-so-far record kept), and the exact best-so-far steps over all of them."""
        with reading(self.db) as stores:
            study = load_study(stores, study_id)
            facts = _facts(stores, study_id)
        objective = objective_of(study)
        done = [f for f in facts if f.state in FINISHED_WITH_VALUE and is_number(f.value)]
        best = best_so_far(done, objective.maximize)
        records = {number for number, _ in best}
        kept = [f for f in done if f.number in records]
        rest = [f for f in done if f.number not in records]
        shown = sorted(kept + spread(rest, limit - len(kept)), key=lambda f: f.number)
        points = [(f.number, f.score, f.state) for f in shown]
        return History(objective.metric, objective.direction, len(done), points, best)

    def _band(self, stores: Stores, study_id: int, facts: list[Facts], metric: str) -> Band:
        reported = [f for f in facts if f.epochs > 0]
        sample = spread(reported, self.band_trials)
        ids = None if len(sample) == len(reported) else [f.id for f in sample]
        return quantile_band(stores.curves.member(study_id, ids, metric), len(sample))


# -- queries ----------------------------------------------------------------------------------


def load_study(stores: Stores, study_id: int) -> StudyRow:
    row = stores.studies.get(study_id)
    if row is None:
        raise NotFound(f"study {study_id} not found")
    return row


def objective_of(study: StudyRow) -> Objective:
    """The study's objective, as its spec (stored validated) names it."""
    return Objective.model_validate(study.spec["objective"])


def _facts(stores: Stores, study_id: int) -> list[Facts]:
    return [Facts(*row) for row in stores.trials.facts(study_id)]


def completed_facts(stores: Stores, study_id: int) -> list[Facts]:
    """Completed trials with a finite value, by number."""
    return [f for f in _facts(stores, study_id) if f.state is COMPLETED and is_number(f.value)]


def facts_at_epoch(stores: Stores, study: StudyRow, epoch: int) -> list[Facts]:
    """Every trial that reported `epoch` with a finite objective, valued at that epoch."""
    metric = objective_of(study).metric
    found = []
    for trial_id, number, state, metrics, epochs in stores.curves.at_epoch(study.id, epoch):
        value = metrics.get(metric)
        if isinstance(value, int | float) and is_number(float(value)):
            found.append(Facts(trial_id, number, state, float(value), epochs))
    return found


def load_params(stores: Stores, ids: list[int]) -> dict[int, dict[str, Any]]:
    return stores.trials.params_of(ids)


def _points(
    stores: Stores, ids: list[int], metric: str
) -> dict[int, list[tuple[int, float | None]]]:
    """Every reported epoch of the trials `ids` for `metric` (a missing one is None)."""
    out: dict[int, list[tuple[int, float | None]]] = {i: [] for i in ids}
    for trial_id, epoch, metrics in stores.curves.of_trials(ids):
        value = metrics.get(metric)
        out[trial_id].append((epoch, float(value) if isinstance(value, int | float) else None))
    return out


def _metric_names(stores: Stores, study: StudyRow, trials: int = 20) -> list[str]:
    """The objective, then every other metric that the latest `trials` reporting trials
    reported, in the order they were reported."""
    recent = stores.trials.latest_reporting(study.id, trials)
    names = {objective_of(study).metric: None}
    for metrics in stores.curves.metrics_of(recent):
        names.update(dict.fromkeys(metrics))
    return list(names)


def _rungs(stores: Stores, study: StudyRow) -> list[RungGroup]:
    """Per (bracket, rung) in bracket and rung order: every rung of the schedule for a
    multi-fidelity study (see `_ladder`), else the one group of `_rung_counts`."""
    groups = _rung_counts(stores, study)
    spec = search.stored_spec(study.spec)
    if not spec.strategy.is_multi_fidelity:
        return groups
    return _ladder(stores, study, [[r.epochs for r in b.rungs] for b in spec.brackets()], groups)


def _ladder(
    stores: Stores, study: StudyRow, epochs: list[list[int]], now: list[RungGroup]
) -> list[RungGroup]:
    """Rungs as the user thinks of them: trials trained to each (a trial at rung k reached
    rungs 0..k), promoted past it, and the best objective reported at its epoch."""
    reached = stores.trials.positions(study.id)
    objective = objective_of(study)
    at_epoch = stores.curves.by_bracket_at(study.id, {e for bracket in epochs for e in bracket})
    values: dict[tuple[int, int], list[float]] = {}
    for bracket, epoch, metrics in at_epoch:
        value = metrics.get(objective.metric)
        if isinstance(value, int | float) and is_number(float(value)):
            values.setdefault((bracket, epoch), []).append(float(value))
    pick_best = max if objective.maximize else min
    counts = {(g.bracket, g.rung): g.counts for g in now}
    empty = {s.value: 0 for s in TrialState}
    return [
        RungGroup(
            b,
            k,
            counts.get((b, k), empty),
            pick_best(values[b, e]) if values.get((b, e)) else None,
            epochs=e,
            trained=sum(1 for tb, tr in reached if tb == b and tr >= k),
            promoted=sum(1 for tb, tr in reached if tb == b and tr > k),
        )
        for b, bracket in enumerate(epochs)
        for k, e in enumerate(bracket)
    ]


def _rung_counts(stores: Stores, study: StudyRow) -> list[RungGroup]:
    """Trial counts and best finished value per (bracket, rung) the trials are now at."""
    rows = stores.trials.count_by_rung(study.id)
    maximize = objective_of(study).maximize
    counts: dict[tuple[int, int], dict[str, int]] = {}
    values: dict[tuple[int, int], list[float]] = {}
    for bracket, rung, state, n, low, high in rows:
        counts.setdefault((bracket, rung), {s.value: 0 for s in TrialState})[state.value] = n
        best = high if maximize else low
        if state in FINISHED_WITH_VALUE and is_number(best):
            values.setdefault((bracket, rung), []).append(best)
    pick_best = max if maximize else min
    return [
        RungGroup(b, r, n, pick_best(values[b, r]) if (b, r) in values else None)
        for (b, r), n in counts.items()
    ]
