"""A study without a pruner leaves Optuna alone while its trials report: each epoch's value
reaches Optuna's storage once, at the trial's end, in one transaction (issue 14, a cheaper
report); a study with a pruner gives Optuna every value at once, so that its pruner decides
exactly as Optuna's own loop would on the same values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from sqlalchemy import event

from hpo.protocol import Decision
from service.api.deps import Services
from service.app import build_services
from service.domain.search import make_pruner, stored_spec
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


def test_reports_without_a_pruner_reach_optuna_at_the_trials_end(services: Services) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 2, "parallel_trials": 2, "epochs": 3}))
    protocol, storage = services.protocol, services.studies.storage
    worker = protocol.leasing.register("w", "h", 1, "cpu", {}).id
    done, failing = (a.trial for a in protocol.leasing.lease(worker, 2))
    with sql_of(storage.engine) as (_, optuna_commits), sql_of(services.db.engine) as (_, ours):
        for epoch in (1, 2, 3):
            decision = protocol.reporting.report(
                done.id, done.lease_token, epoch, {"val_accuracy": epoch / 10}
            )
            assert decision is Decision.CONTINUE
        protocol.reporting.report(done.id, done.lease_token, 2, {"val_accuracy": 0.9})  # repeat
    assert (len(optuna_commits), len(ours)) == (0, 4)  # one commit a report, none of Optuna's
    assert optuna_trial(services, done.id).intermediate_values == {}

    protocol.reporting.complete(done.id, done.lease_token)
    completed = optuna_trial(services, done.id)
    assert completed.state is optuna.trial.TrialState.COMPLETE
    assert completed.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}  # the repeat changed none
    assert completed.value == 0.3

    protocol.reporting.report(failing.id, failing.lease_token, 1, {"val_accuracy": 0.4})
    protocol.reporting.fail(failing.id, failing.lease_token, "loss is NaN")
    failed = optuna_trial(services, failing.id)
    assert failed.state is optuna.trial.TrialState.FAIL
    assert failed.intermediate_values == {1: 0.4}


def _quality(number: int) -> float:
    """Trials 0-3 good, then alternately bad and good: some are pruned, some not."""
    return 0.9 if number < 4 or number % 2 else 0.2 + 0.01 * number


def _service_decisions(services: Services, doc: dict[str, Any]) -> list[tuple[int, int | None]]:
    """(trial number, epoch it was pruned at or None) of every trial of the study."""
    services.studies.create(doc)
    protocol = services.protocol
    worker = protocol.leasing.register("w", "h", 1, "cpu", {}).id
    outcome = []
    while leased := protocol.leasing.lease(worker):
        trial, pruned_at = leased[0].trial, None
        for epoch in range(1, doc["budget"]["epochs"] + 1):
            value = _quality(trial.number) * epoch / 6
            decision = protocol.reporting.report(
                trial.id, trial.lease_token, epoch, {"val_accuracy": value}
            )
            if decision is Decision.PRUNE:
                pruned_at = epoch
                break
            assert decision is Decision.CONTINUE
        if pruned_at is None:
            protocol.reporting.complete(trial.id, trial.lease_token)
        outcome.append((trial.number, pruned_at))
    return outcome


def _optunas_decisions(doc: dict[str, Any]) -> list[tuple[int, int | None]]:
    """The same trials and values through Optuna's own report / should_prune loop, with the
    pruner the service builds for the spec, in memory."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner(stored_spec(doc)))
    outcome = []
    for number in range(doc["budget"]["max_trials"]):
        trial, pruned_at, value = study.ask(), None, 0.0
        for epoch in range(1, doc["budget"]["epochs"] + 1):
            value = _quality(number) * epoch / 6
            trial.report(value, epoch)
            if trial.should_prune():
                pruned_at = epoch
                break
        state = optuna.trial.TrialState.PRUNED if pruned_at else optuna.trial.TrialState.COMPLETE
        study.tell(trial, None if pruned_at else value, state=state)
        outcome.append((number, pruned_at))
    return outcome


@pytest.mark.parametrize("early_stopping", ["median", "asha"])
def test_a_pruned_study_prunes_what_optunas_own_loop_prunes(
    services: Services, early_stopping: str
) -> None:
    doc = spec_doc(
        strategy={"kind": "random", "seed": 0, "early_stopping": early_stopping},
        budget={"max_trials": 10, "parallel_trials": 1, "epochs": 6},
    )
    expected = _optunas_decisions(doc)
    assert any(epoch is not None for _number, epoch in expected)  # the test prunes something
    assert _service_decisions(services, doc) == expected


def test_a_finished_trials_values_go_out_in_one_insert(services: Services) -> None:
    # through Optuna's private table models: an Optuna without them fails here instead of
    # silently writing value by value
    assert optuna_trials.writes_values_together(services.studies.storage)
    services.studies.create(spec_doc(budget={"max_trials": 1, "parallel_trials": 1, "epochs": 4}))
    protocol, storage = services.protocol, services.studies.storage
    worker = protocol.leasing.register("w", "h", 1, "cpu", {}).id
    [leased] = protocol.leasing.lease(worker)
    trial = leased.trial
    for epoch in (1, 2, 3, 4):
        protocol.reporting.report(trial.id, trial.lease_token, epoch, {"val_accuracy": epoch / 8})
    inserts: list[str] = []

    def executed(_conn: object, _cursor: object, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO trial_intermediate_values"):
            inserts.append(statement)

    event.listen(storage.engine, "before_cursor_execute", executed)
    try:
        protocol.reporting.complete(trial.id, trial.lease_token)
    finally:
        event.remove(storage.engine, "before_cursor_execute", executed)
    assert len(inserts) == 1
    assert optuna_trial(services, trial.id).intermediate_values == {
        1: 0.125,
        2: 0.25,
        3: 0.375,
        4: 0.5,
    }
