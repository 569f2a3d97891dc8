"""Multi-objective samplers past their random start-up, through the service's own ask and tell:
every proposal is valid for a conditional space, Optuna is told both values, and the study's
Pareto set is the one Optuna computes from the same trials."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from service.api.deps import Services
from service.app import build_services
from service.settings import Settings
from tests.conftest import spec_doc
from tests.service.domain.test_search import SPACE, _valid


@pytest.fixture
def services(settings: Settings) -> Services:
    return build_services(settings)


def _costs(params: dict[str, Any]) -> dict[str, float]:
    """Accuracy that peaks at lr = 0.01, and a cost that grows with depth and lr."""
    accuracy = 1.0 - abs(math.log10(params["lr"]) + 2) / 4
    return {"val_accuracy": accuracy, "train_seconds": params["depth"] + 10 * params["lr"]}


@pytest.mark.parametrize("kind", ["nsga2", "tpe", "gp"])
def test_samplers_past_start_up_propose_valid_configurations(
    services: Services, settings: Settings, kind: str
) -> None:
    doc = spec_doc(
        f"mo-{kind}",
        strategy={"kind": kind, "seed": 2},
        budget={"max_trials": 10, "parallel_trials": 1, "epochs": 1},
        space=SPACE,
    )
    del doc["objective"]
    doc["objectives"] = [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "train_seconds", "direction": "minimize"},
    ]
    study_id = services.studies.create(doc).row.id
    worker = services.protocol.leasing.register("w", "h", 1, "cpu", {}).id
    proposed = []
    while leased := services.protocol.leasing.lease(worker):
        trial = leased[0].trial
        proposed.append(trial.params)
        token = trial.lease_token
        services.protocol.reporting.report(trial.id, token, 1, _costs(trial.params))
        services.protocol.reporting.complete(trial.id, token)
    assert len(proposed) == 10 and all(_valid(p) for p in proposed)
    view = services.studies.get(study_id)
    assert view.front is not None and view.best is None
    told = optuna.load_study(study_name=f"mo-{kind}", storage=settings.database_url)
    expected = [v for p in proposed for v in _costs(p).values()]
    assert [v for t in told.trials for v in t.values] == pytest.approx(expected)
    assert [t.number for t in view.front] == sorted(t.number for t in told.best_trials)
