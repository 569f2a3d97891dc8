"""A cheaper completion (issue 15, round 7): a finished trial's curve and end reach Optuna in
one transaction of its own, told exactly once; the service's transaction reads nothing study-
wide that cannot change the answer (the kept models when the trial uploaded none, the counts
while the study has trials left to create). On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from optuna.trial import TrialState as OptunaState

from hpo.protocol import StudyState, TrialState
from service.api.deps import Services
from service.app import build_services
from service.domain import search
from service.settings import Settings
from service.storage import optuna_trials
from tests.conftest import spec_doc
from tests.support.optuna_side import optuna_trial
from tests.support.sql import sql_of


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.db.dispose()


def _leased(services: Services, trials: int, parallel: int, epochs: int = 3) -> list[Any]:
    budget = {"max_trials": trials, "parallel_trials": parallel, "epochs": epochs}
    services.studies.create(spec_doc(budget=budget))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    return leasing.lease(worker, count=parallel, held=[])


def _curve(epochs: int) -> list[tuple[int, dict[str, float]]]:
    return [(e, {"val_accuracy": e / 8, "val_loss": 1 / e}) for e in range(1, epochs + 1)]


def test_the_end_and_the_curve_reach_optuna_in_one_transaction(services: Services) -> None:
    [leased] = _leased(services, trials=2, parallel=1)
    trial, storage = leased.trial, services.studies.storage
    reporting = services.protocol.reporting
    with sql_of(storage.engine) as (statements, commits):
        done = reporting.complete(trial.id, trial.lease_token, None, _curve(3))
    assert done.state is TrialState.COMPLETED
    assert len(commits) == 1  # was 2: the curve, then Optuna's own tell
    assert len([s for s in statements if not s.startswith(("BEGIN", "SAVEPOINT"))]) <= 3
    told = optuna_trial(services, trial.id)
    assert told.state is OptunaState.COMPLETE and told.value == 3 / 8
    assert told.intermediate_values == {1: 0.125, 2: 0.25, 3: 0.375}
    assert told.datetime_complete is not None
    # Told exactly once: a repeated completion hears the same and writes nothing to Optuna.
    with sql_of(storage.engine) as (statements, commits):
        again = reporting.complete(trial.id, trial.lease_token, None, _curve(3))
    assert again.state is TrialState.COMPLETED and commits == [] and statements == []
    assert optuna_trial(services, trial.id).datetime_complete == told.datetime_complete


def test_an_ended_optuna_trial_is_not_ended_again(services: Services) -> None:
    [leased] = _leased(services, trials=1, parallel=1)
    storage = services.studies.storage
    optuna_id = optuna_trial(services, leased.trial.id)._trial_id
    search.finish(storage, optuna_id, TrialState.COMPLETED, 0.5, [(1, 0.5)])
    first = storage.get_trial(optuna_id)
    # A second end (a tell the reaper repeats) changes nothing, neither state nor values.
    assert not optuna_trials.finish_trial(storage, optuna_id, OptunaState.FAIL, None, [(1, 0.9)])
    search.finish(storage, optuna_id, TrialState.FAILED, None, [(1, 0.9), (2, 0.1)])
    again = storage.get_trial(optuna_id)
    assert again.state is OptunaState.COMPLETE and again.values == [0.5]
    assert again.intermediate_values == {1: 0.5}
    assert again.datetime_complete == first.datetime_complete


def test_a_stored_value_is_overwritten_and_several_objectives_are_kept(
    services: Services,
) -> None:
    [leased] = _leased(services, trials=1, parallel=1)
    storage = services.studies.storage
    optuna_id = optuna_trial(services, leased.trial.id)._trial_id
    storage.set_trial_intermediate_value(optuna_id, 2, 0.1)  # a rung's end, told before
    curve = [(1, 0.25), (2, 0.5), (3, float("nan"))]
    assert optuna_trials.finish_trial(storage, optuna_id, OptunaState.COMPLETE, [0.5, 2.0], curve)
    told = storage.get_trial(optuna_id)
    assert told.state is OptunaState.COMPLETE and told.values == [0.5, 2.0]
    assert told.intermediate_values[1] == 0.25 and told.intermediate_values[2] == 0.5
    assert len(told.intermediate_values) == 3


def test_a_missing_optuna_trial_is_left_to_optunas_own_error(services: Services) -> None:
    _leased(services, trials=1, parallel=1)
    storage = services.studies.storage
    assert not optuna_trials.finish_trial(storage, 10_000, OptunaState.COMPLETE, [1.0])
    with pytest.raises(KeyError):
        search.finish(storage, 10_000, TrialState.COMPLETED, 1.0)


def test_no_study_wide_read_while_trials_remain_to_create_and_no_model_was_kept(
    services: Services,
) -> None:
    leased = _leased(services, trials=3, parallel=2, epochs=1)
    reporting = services.protocol.reporting
    first, second = (a.trial for a in leased)
    with sql_of(services.db.engine) as (statements, _commits):
        reporting.complete(first.id, first.lease_token, None, _curve(1))
    counts = [s for s in statements if "count(" in s.lower()]
    models = [s for s in statements if "model_id IS NOT NULL" in s]
    assert counts == [] and models == []  # 2 of 3 trials created: it cannot be settled yet
    # The study's last trial created: its completions count, and the last one settles it.
    worker = services.protocol.leasing.register("w2", "h", 1, "cpu", {}).id
    [third] = services.protocol.leasing.lease(worker, count=1, held=[])
    with sql_of(services.db.engine) as (statements, _commits):
        reporting.complete(second.id, second.lease_token, None, _curve(1))
    assert [s for s in statements if "count(" in s.lower()] != []
    reporting.complete(third.trial.id, third.trial.lease_token, None, _curve(1))
    view = services.studies.get(third.trial.study_id)
    assert view.row.state is StudyState.COMPLETED
    assert view.counts[TrialState.COMPLETED] == 3
