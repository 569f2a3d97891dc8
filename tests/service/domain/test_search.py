"""Each strategy proposes valid configurations; a seed makes the proposals reproducible;
early stopping prunes through Optuna's pruners."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hpo.protocol import Decision, TrialState
from service.api.deps import Services
from service.app import build_services
from service.settings import Settings
from tests.conftest import spec_doc

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "depth": {"type": "int", "low": 1, "high": 4},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
}


@pytest.fixture
def services(settings: Settings) -> Services:
    return build_services(settings)


def _objective(params: dict[str, Any]) -> float:
    """A cheap objective with its optimum at lr = 0.01, depth = 2."""
    return 1.0 - abs(math.log10(params["lr"]) + 2) / 4 - abs(params["depth"] - 2) / 8


def _run(
    services: Services, name: str, kind: str, trials: int, seed: int | None = 0, **strategy: Any
) -> list[dict[str, Any]]:
    doc = spec_doc(
        name,
        strategy={"kind": kind, "seed": seed, **strategy},
        budget={"max_trials": trials, "parallel_trials": 1, "epochs": 1},
        space=SPACE,
    )
    services.studies.create(doc)
    worker = services.protocol.leasing.register("w", "h", 1, "cpu", {}).id
    proposed = []
    while leased := services.protocol.leasing.lease(worker):
        trial = leased[0].trial
        proposed.append(trial.params)
        services.protocol.reporting.report(
            trial.id, trial.lease_token, 1, {"val_accuracy": _objective(trial.params)}
        )
        services.protocol.reporting.complete(trial.id, trial.lease_token)
    return proposed


def _valid(params: dict[str, Any]) -> bool:
    ok = 1e-4 <= params["lr"] <= 0.3 and params["batch_size"] in (32, 64, 128)
    ok = ok and params["depth"] in (1, 2, 3, 4) and params["optimizer"] in ("sgd", "adamw")
    has_momentum = "momentum" in params
    return (
        ok
        and has_momentum == (params["optimizer"] == "sgd")
        and (not has_momentum or 0.5 <= params["momentum"] <= 0.99)
    )


@pytest.mark.parametrize("kind", ["random", "tpe", "gp"])
def test_strategy_proposes_valid_configurations(services: Services, kind: str) -> None:
    proposed = _run(services, kind, kind, trials=14)
    assert len(proposed) == 14
    assert all(_valid(p) for p in proposed), proposed
    assert len({p["lr"] for p in proposed}) == 14  # not one point over and over


def test_grid_proposes_every_point_exactly_once(services: Services) -> None:
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True, "grid": 3},
        "norm": {"type": "categorical", "choices": ["batch", "group"]},
        "groups": {"type": "int", "values": [2, 4], "when": {"norm": "group"}},
    }
    services.studies.create(
        spec_doc(
            "g", strategy={"kind": "grid"}, space=space, budget={"parallel_trials": 1, "epochs": 1}
        )
    )
    worker = services.protocol.leasing.register("w", "h", 1, "cpu", {}).id
    seen = []
    while leased := services.protocol.leasing.lease(worker):
        trial = leased[0].trial
        seen.append(tuple(sorted(trial.params.items())))
        services.protocol.reporting.report(trial.id, trial.lease_token, 1, {"val_accuracy": 0.5})
        services.protocol.reporting.complete(trial.id, trial.lease_token)
    assert len(seen) == len(set(seen)) == 3 * (1 + 2)


@pytest.mark.parametrize("kind", ["random", "tpe", "gp"])
def test_seed_makes_the_proposals_reproducible(services: Services, kind: str) -> None:
    first = _run(services, f"{kind}-a", kind, trials=12, seed=7)
    second = _run(services, f"{kind}-b", kind, trials=12, seed=7)
    other = _run(services, f"{kind}-c", kind, trials=12, seed=8)
    assert first == second
    assert first != other


def test_tpe_beats_random_on_average_late_in_the_run(services: Services) -> None:
    tpe = _run(services, "tpe", "tpe", trials=30, seed=1)
    rnd = _run(services, "rnd", "random", trials=30, seed=1)
    late = slice(15, 30)
    assert sum(map(_objective, tpe[late])) > sum(map(_objective, rnd[late]))


@pytest.mark.parametrize("early_stopping", ["median", "asha"])
def test_early_stopping_prunes_bad_trials(services: Services, early_stopping: str) -> None:
    doc = spec_doc(
        strategy={"kind": "random", "seed": 0, "early_stopping": early_stopping},
        budget={"max_trials": 8, "parallel_trials": 1, "epochs": 6},
    )
    services.studies.create(doc)
    worker = services.protocol.leasing.register("w", "h", 1, "cpu", {}).id
    decisions = []
    for number in range(8):
        trial = services.protocol.leasing.lease(worker)[0].trial
        quality = 0.9 if number < 4 else 0.1  # later trials are clearly worse
        decision = Decision.CONTINUE
        for epoch in range(1, 7):
            decision = services.protocol.reporting.report(
                trial.id, trial.lease_token, epoch, {"val_accuracy": quality * epoch / 6}
            )
            if decision is not Decision.CONTINUE:
                break
        if decision is Decision.CONTINUE:
            services.protocol.reporting.complete(trial.id, trial.lease_token)
        decisions.append(decision)
    assert decisions[:3] == [Decision.CONTINUE] * 3
    assert Decision.PRUNE in decisions[4:]
    view = services.studies.list()[0]
    assert view.counts[TrialState.PRUNED] == decisions.count(Decision.PRUNE) > 0
    assert view.row.state == "completed"


FINITE = {
    "lr": {"type": "float", "values": [1e-3, 1e-2, 1e-1]},
    "norm": {"type": "categorical", "choices": ["none", "batch"]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1, "when": {"norm": "none"}},
}
FINITE_SIZE = 3 * (3 + 1)  # lr x (none x 3 dropouts + batch)


def _drain(services: Services, name: str, **overrides: Any) -> list[dict[str, Any]]:
    """Run every trial the study hands out with a constant objective (so that TPE keeps
    proposing what it knows); the configurations in the order they were handed out."""
    services.studies.create(spec_doc(name, **overrides))
    worker = services.protocol.leasing.register("w", "h", 1, "cpu", {}).id
    proposed = []
    while leased := services.protocol.leasing.lease(worker):
        trial = leased[0].trial
        proposed.append(trial.params)
        services.protocol.reporting.report(trial.id, trial.lease_token, 1, {"val_accuracy": 0.5})
        services.protocol.reporting.complete(trial.id, trial.lease_token)
    return proposed


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_a_finite_space_is_tried_once_then_the_study_completes_saying_why(
    services: Services, kind: str
) -> None:
    proposed = _drain(
        services,
        kind,
        strategy={"kind": kind, "seed": 3},
        budget={"max_trials": 30, "parallel_trials": 1, "epochs": 1},
        space=FINITE,
    )
    keys = {tuple(sorted(p.items())) for p in proposed}
    assert len(proposed) == len(keys) == FINITE_SIZE  # every configuration, none twice
    study = services.studies.list()[0].row
    assert study.state.value == "completed"
    assert study.reason == (
        f"the space has {FINITE_SIZE} configurations and each was tried once (max_trials 30); "
        "set strategy.allow_repeats to try some again"
    )


def test_repeats_are_proposed_when_the_spec_allows_them(services: Services) -> None:
    proposed = _drain(
        services,
        "repeats",
        strategy={"kind": "random", "seed": 3, "allow_repeats": True},
        budget={"max_trials": 30, "parallel_trials": 1, "epochs": 1},
        space=FINITE,
    )
    assert len(proposed) == 30
    assert len({tuple(sorted(p.items())) for p in proposed}) < 30
    assert services.studies.list()[0].row.reason is None


def test_a_budget_above_the_finite_space_is_refused(services: Services) -> None:
    from service.domain.errors import InvalidInput

    doc = spec_doc("patch", strategy={"kind": "tpe"}, budget={"max_trials": 4}, space=FINITE)
    study = services.studies.create(doc).row
    with pytest.raises(InvalidInput, match=f"exceeds the space's {FINITE_SIZE} configurations"):
        services.studies.patch_budget(study.id, FINITE_SIZE + 1, None)
    assert services.studies.patch_budget(study.id, FINITE_SIZE, None).row.max_trials == FINITE_SIZE


def _parallel(services: Services, name: str, kind: str, reverse: bool) -> list[dict[str, Any]]:
    """Four trials at a time, finished first to last or last to first with made-up values."""
    services.studies.create(
        spec_doc(
            name,
            strategy={"kind": kind, "seed": 5},
            budget={"max_trials": 16, "parallel_trials": 4, "epochs": 1},
            space=SPACE,
        )
    )
    worker = services.protocol.leasing.register("w", "h", 1, "cpu", {}).id
    proposed: dict[int, dict[str, Any]] = {}
    while leased := services.protocol.leasing.lease(worker, 4):
        trials = [a.trial for a in leased]
        for trial in reversed(trials) if reverse else trials:
            proposed[trial.number] = trial.params
            value = 0.9 - 0.1 * trial.number if reverse else 0.1 * trial.number
            services.protocol.reporting.report(
                trial.id, trial.lease_token, 1, {"val_accuracy": value}
            )
            services.protocol.reporting.complete(trial.id, trial.lease_token)
    return [proposed[n] for n in sorted(proposed)]


def test_random_proposals_repeat_whatever_the_order_and_results(services: Services) -> None:
    # docs/spec.md, "What a seed repeats": random reads nothing but (seed, trial number)
    assert _parallel(services, "a", "random", False) == _parallel(services, "b", "random", True)


def test_tpe_proposals_depend_on_the_history(services: Services) -> None:
    # ... while TPE models the results so far: other results, other proposals
    assert _parallel(services, "a", "tpe", False) != _parallel(services, "b", "tpe", True)
