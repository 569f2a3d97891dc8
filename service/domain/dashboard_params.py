"""Parameter views for the web page: parallel coordinates and parameter importance.

Both read at most `limit` completed trials of a study, chosen by `dashboard.pick` / `spread`, so
their cost does not grow with the study. A successive-halving or Hyperband study completes few
trials by design, so there both compare every trial at the first rung's epoch instead (all of them
trained that far, so the values are comparable) and say so in `basis`. No FastAPI here.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from service.domain import search
from service.domain.dashboard import (
    Facts,
    best_completed,
    completed_facts,
    facts_at_epoch,
    load_params,
    load_study,
    objective_of,
    pick,
    spread,
)
from service.domain.spec.space import distribution_for
from service.storage.db import Database
from service.storage.models import StudyRow
from service.storage.unit import Stores, reading

EVALUATOR = "PED-ANOVA"


@dataclass(frozen=True)
class Axis:
    """One parameter of the space as a parallel-coordinates axis: `categorical` (choices) or
    `numeric` (low..high, log-scaled when `log`); a list of `values` is numeric when it holds
    numbers."""

    name: str
    kind: str
    low: float | None
    high: float | None
    log: bool
    choices: list[Any] | None


@dataclass(frozen=True)
class Line:
    """One trial: its objective and its value on each axis (None: the parameter was inactive)."""

    number: int
    value: float
    values: list[Any]


@dataclass(frozen=True)
class Parallel:
    metric: str
    direction: str
    total: int
    axes: list[Axis]
    lines: list[Line]
    basis: str | None = None


@dataclass(frozen=True)
class Importance:
    evaluator: str
    trials: int
    importances: list[tuple[str, float]]
    note: str | None
    basis: str | None = None


class ParamViews:
    """Read-only parameter aggregates of one study."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def parallel(self, study_id: int, limit: int) -> Parallel:
        """Params and objective of at most `limit` completed trials (a fifth of them the best,
        the rest spread over the study), with one axis per parameter of the space."""
        with reading(self.db) as stores:
            study = load_study(stores, study_id)
            objective = objective_of(study)
            compared, basis = _compared(stores, study)
            if basis is None:
                best = best_completed(compared, objective.maximize, limit // 5)
            else:
                sign = -1.0 if objective.maximize else 1.0
                best = heapq.nsmallest(limit // 5, compared, key=lambda f: sign * f.score)
            chosen = pick(compared, best, limit)
            params = load_params(stores, [f.id for f in chosen])
        axes = axes_of(study)
        lines = [Line(f.number, f.score, [params[f.id].get(a.name) for a in axes]) for f in chosen]
        return Parallel(objective.metric, objective.direction, len(compared), axes, lines, basis)

    def importance(self, study_id: int, limit: int) -> Importance:
        """Optuna's PED-ANOVA importance of each parameter over at most `limit` completed
        trials spread over the study. Parameters absent from some of them (conditional ones)
        are left out, as Optuna does; `note` says why the list is empty when it is."""
        with reading(self.db) as stores:
            study = load_study(stores, study_id)
            compared, basis = _compared(stores, study)
            sample = spread(compared, limit)
            params = load_params(stores, [f.id for f in sample])
        if len(sample) < 2:
            needs = "two completed trials" if basis is None else "two trials at the first rung"
            return Importance(EVALUATOR, len(sample), [], f"needs at least {needs}", basis)
        try:
            found = _evaluate(study, sample, params)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            return Importance(EVALUATOR, len(sample), [], f"could not be computed: {exc}", basis)
        return Importance(EVALUATOR, len(sample), found, None, basis)


def _compared(stores: Stores, study: StudyRow) -> tuple[list[Facts], str | None]:
    """The trials the parameter views compare, and on what basis when not their final values:
    completed trials, or for multi-fidelity studies every trial at the first rung's epoch."""
    strategy = search.stored_spec(study.spec).strategy
    if not strategy.is_multi_fidelity:
        return completed_facts(stores, study.id), None
    epoch = strategy.min_epochs
    basis = f"values at epoch {epoch}, the first rung, which every trial trains"
    return facts_at_epoch(stores, study, epoch), basis


def axes_of(study: StudyRow) -> list[Axis]:
    """One axis per parameter of the study's space, in spec order."""
    axes = []
    for name, param in study.spec["space"].items():
        values = param.get("values")
        if param["type"] == "categorical":
            axes.append(Axis(name, "categorical", None, None, False, list(param["choices"])))
        elif values:
            axes.append(Axis(name, "numeric", min(values), max(values), False, None))
        else:
            log = bool(param.get("log"))
            axes.append(Axis(name, "numeric", param.get("low"), param.get("high"), log, None))
    return axes


def _evaluate(
    study: StudyRow, sample: list[Facts], params: dict[int, dict[str, Any]]
) -> list[tuple[str, float]]:
    space = search.stored_spec(study.spec).space
    names = [n for n in space if all(n in params[f.id] for f in sample)]
    distributions = {n: distribution_for(space[n]) for n in names}
    direction = optuna.study.StudyDirection[objective_of(study).direction.upper()]
    probe = optuna.create_study(direction=direction)
    probe.add_trials([_frozen(params[f.id], distributions, f) for f in sample])
    found = optuna.importance.get_param_importances(
        probe, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), normalize=True
    )
    return [(name, float(v)) for name, v in found.items()]


def _frozen(
    params: dict[str, Any], distributions: dict[str, BaseDistribution], facts: Facts
) -> optuna.trial.FrozenTrial:
    kept = {n: params[n] for n in distributions}
    return optuna.trial.create_trial(
        params=kept,
        distributions=distributions,
        value=facts.score,
    )
