"""A leased trial's params in one Optuna transaction (issues 14 and 15, the lease's cost):
`search.ask_many` keeps what the sampler writes until the study's trials of a lease are asked,
then writes it together, and answers `Trial`'s read-back from memory. None of that may change
what Optuna decides or stores: each study below is run twice by the same scripted worker, once
through the service's ask and once through plain Optuna (`study.ask()` with the same seeded
sampler, then `suggest_params`, each param in Optuna's own transaction), and the params handed
out and everything `optuna.load_study` reads back must be equal. On SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
import pytest

from hpo.protocol import Decision
from service.app import build_services
from service.domain import search
from service.domain.spec.space import distribution_for, suggest_params
from service.settings import Settings
from tests.conftest import postgres_database, spec_doc
from tests.service.domain.test_search import SPACE

MULTI = [
    {"metric": "val_accuracy", "direction": "maximize"},
    {"metric": "train_seconds", "direction": "minimize"},
]
SH = {"kind": "successive_halving", "n_configs": 9, "min_epochs": 1, "reduction_factor": 3}
HYPERBAND = {"kind": "hyperband", "min_epochs": 1, "reduction_factor": 3}

STUDIES: dict[str, dict[str, Any]] = {
    "random": {"strategy": {"kind": "random", "seed": 1}, "trials": 10},
    "tpe": {"strategy": {"kind": "tpe", "seed": 2}, "trials": 16},
    "gp": {"strategy": {"kind": "gp", "seed": 3}, "trials": 9},
    "nsga2": {"strategy": {"kind": "nsga2", "seed": 4}, "trials": 14, "objectives": MULTI},
    "tpe-initial": {
        "strategy": {"kind": "tpe", "seed": 5},
        "trials": 10,
        "initial": [
            {"lr": 0.01, "batch_size": 64, "depth": 2, "optimizer": "adamw"},
            {"lr": 0.05, "batch_size": 32, "depth": 3, "optimizer": "sgd", "momentum": 0.9},
        ],
    },
    "grid": {
        "strategy": {"kind": "grid", "seed": 8},
        "trials": 12,
        "space": {
            "lr": {"type": "float", "values": [0.001, 0.01, 0.1]},
            "depth": {"type": "int", "low": 1, "high": 3},
            "batch_size": {"type": "categorical", "choices": [32, 64]},
        },
    },
    "sh-tpe": {"strategy": {**SH, "seed": 6, "sampler": "tpe"}, "epochs": 9},
    "hyperband-bohb": {"strategy": {**HYPERBAND, "seed": 7, "sampler": "bohb"}, "epochs": 9},
}


def _metrics(params: dict[str, Any], epoch: int) -> dict[str, float]:
    """A known curve per configuration: better for lr near 0.01 and depth 2."""
    quality = 1.0 - abs(math.log10(params["lr"]) + 2) / 4 - abs(params["depth"] - 2) / 8
    return {
        "val_accuracy": quality * (1 - 0.5**epoch),
        "train_seconds": params["depth"] + 10 * params["lr"],
    }


def _plain_optuna(
    cache: search.StudyCache, requests: Sequence[search.AskRequest]
) -> list[search.Asked | Exception]:
    """What the service asked before: plain Optuna, one request after the other (a grid point
    as Optuna's `create_new_trial` of a trial with its params, in one transaction)."""
    asked: list[search.Asked | Exception] = []
    for request in requests:
        if request.spec.strategy.kind == "grid":  # a trial made with its params, no sampler
            params = search.grid_point(request.spec, request.number)
            distributions = {
                k: distribution_for(request.spec.space[k], v) for k, v in params.items()
            }
            template = optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING, params=params, distributions=distributions
            )
            asked.append((cache.storage.create_new_trial(request.study_id, template), params))
            continue
        study = optuna.Study(study_name=request.name, storage=cache.storage)
        study.sampler = search.make_sampler(request.spec, request.number)
        trial = study.ask()
        params = suggest_params(request.spec.space, trial)
        search._note_choice(cache.storage, study.sampler, trial._trial_id)
        asked.append((trial._trial_id, params))
    return asked


def _run(url: str, tmp: Any, name: str, lease: int) -> tuple[list[Any], list[Any]]:
    """Run study `name` of STUDIES with one worker leasing `lease` trials at a time, each
    trained from its start epoch to its target and completed unless told otherwise. Returns
    the (number, params) handed out in order, and Optuna's trials as `load_study` reads them."""
    case = STUDIES[name]
    doc = spec_doc(
        name,
        strategy=case["strategy"],
        budget={
            "max_trials": case.get("trials", 1),
            "parallel_trials": 4,
            "epochs": case.get("epochs", 1),
        },
        space=case.get("space", SPACE),
    )
    if "trials" not in case:
        del doc["budget"]["max_trials"]  # set by the strategy's rungs
    if "objectives" in case:
        del doc["objective"]
        doc["objectives"] = case["objectives"]
    if "initial" in case:
        doc["initial"] = case["initial"]
    services = build_services(Settings(database_url=url, artifacts_dir=tmp / "artifacts"))
    try:
        services.studies.create(doc)
        protocol = services.protocol
        worker = protocol.leasing.register("w", "h", 1, "cpu", {}).id
        handed: list[Any] = []
        while leased := protocol.leasing.lease(worker, count=lease):
            for assignment in leased:
                trial = assignment.trial
                assert trial.params is not None and trial.lease_token is not None
                handed.append((trial.number, assignment.start_epoch, trial.params))
                decision = Decision.CONTINUE
                for epoch in range(assignment.start_epoch + 1, assignment.target_epochs + 1):
                    metrics = _metrics(trial.params, epoch)
                    decision = protocol.reporting.report(
                        trial.id, trial.lease_token, epoch, metrics
                    )
                    if decision is not Decision.CONTINUE:
                        break
                if decision is Decision.CONTINUE:
                    protocol.reporting.complete(trial.id, trial.lease_token)
    finally:
        services.db.dispose()
    study = optuna.load_study(study_name=name, storage=url)
    stored = [
        (
            t.number,
            t.state,
            t.params,
            t.distributions,
            t.system_attrs,
            t.values,
            t.intermediate_values,
        )
        for t in study.trials
    ]
    return handed, stored


@pytest.fixture(params=["sqlite", "postgres"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """Two empty databases of one kind: the service's ask's, plain Optuna's."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{tmp_path / 'plain.db'}"
        return
    with postgres_database() as new, postgres_database() as plain:
        yield new, plain


@pytest.mark.parametrize("name", list(STUDIES))
def test_the_service_asks_as_plain_optuna_does(
    two_urls: tuple[str, str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    new_url, plain_url = two_urls
    (tmp_path / "new").mkdir()
    (tmp_path / "plain").mkdir()
    handed, stored = _run(new_url, tmp_path / "new", name, lease=3)
    with monkeypatch.context() as patched:
        patched.setattr(search, "ask_many", _plain_optuna)
        plain_handed, plain_stored = _run(plain_url, tmp_path / "plain", name, lease=3)
    assert len(handed) >= STUDIES[name].get("trials", 9)
    assert handed == plain_handed
    assert stored == plain_stored
