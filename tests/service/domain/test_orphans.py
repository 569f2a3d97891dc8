"""Optuna trials a crash leaves running: the reaper ends them FAIL once no lease can claim them,
and never a trial that a live lease (in this or another server process) is still creating. On
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState as OptunaState

from service.api.deps import Services
from service.app import build_services
from service.domain.leasing import Leasing
from service.domain.reaping import ORPHAN_REASON, Tidied
from service.settings import Settings
from tests.conftest import spec_doc
from tests.support.clock import Clock


def _optuna_trials(services: Services, name: str) -> list[optuna.trial.FrozenTrial]:
    """What a user's `optuna.load_study` on the database shows."""
    url = services.settings.database_url
    return optuna.load_study(study_name=name, storage=url).trials


def _study(services: Services, name: str, max_trials: int = 3) -> int:
    budget = {"max_trials": max_trials, "parallel_trials": 1, "epochs": 1}
    view = services.studies.create(spec_doc(name, budget=budget))
    assert view.row.optuna_study_id is not None
    return view.row.optuna_study_id


def test_a_lease_that_died_after_sampling_leaves_a_trial_ended_once_it_is_sampled_again(
    services: Services, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies after writing the new trial's params to Optuna and before storing its
    Optuna id: Optuna holds a running trial with params that no trial of ours names."""
    _study(services, "crashed")
    leasing, reaping = services.protocol.leasing, services.protocol.reaping
    worker = leasing.register("w", "host", 1, "cpu", {}).id
    with monkeypatch.context() as crash:
        crash.setattr(Leasing, "_assignments", lambda self, ids, sampled: [])  # dies here
        assert leasing.lease(worker) == []
    [lost] = _optuna_trials(services, "crashed")
    assert lost.state == OptunaState.RUNNING and set(lost.params) == {"lr", "norm"}
    # Our trial still waits for its Optuna trial (its lease may be alive, in another
    # process), so nothing is ended: not while its lease runs, nor once it is queued again.
    assert reaping.tidy_optuna() == Tidied(ended=0)
    clock.advance(31)
    assert reaping.reap() == 1
    assert reaping.tidy_optuna() == Tidied(ended=0)
    [again] = leasing.lease(worker)  # sampled again, under a new Optuna trial
    assert again.trial.number == 0 and again.trial.optuna_trial_id != lost._trial_id
    assert reaping.tidy_optuna() == Tidied(ended=1)
    assert reaping.tidy_optuna() == Tidied(ended=0)  # ended once
    by_id = {t._trial_id: t for t in _optuna_trials(services, "crashed")}
    assert by_id[lost._trial_id].state == OptunaState.FAIL
    assert by_id[lost._trial_id].system_attrs["hpo:orphaned"] == ORPHAN_REASON
    assert by_id[lost._trial_id].datetime_complete is not None
    assert by_id[again.trial.optuna_trial_id].state == OptunaState.RUNNING
    assert "hpo:orphaned" not in by_id[again.trial.optuna_trial_id].system_attrs


def test_trials_created_without_params_are_ended_and_other_studies_are_left_alone(
    services: Services,
) -> None:
    """A server that stops between creating a lease's Optuna trials and writing their params
    leaves running trials without params; an Optuna study the service does not own, in the
    same database, is none of its business."""
    optuna_id = _study(services, "bare")
    storage = services.protocol.context.storage
    made = [storage.create_new_trial(optuna_id) for _ in range(2)]
    url = services.settings.database_url
    theirs = optuna.create_study(study_name="someone-elses", storage=url)
    their_trial = theirs.ask()
    assert services.protocol.reaping.tidy_optuna() == Tidied(ended=2)
    trials = _optuna_trials(services, "bare")
    assert [t._trial_id for t in trials] == made
    assert [t.state for t in trials] == [OptunaState.FAIL] * 2
    assert [t.params for t in trials] == [{}, {}]
    state = optuna.load_study(study_name="someone-elses", storage=url).trials[0].state
    assert (their_trial.number, state) == (0, OptunaState.RUNNING)


def test_a_live_lease_of_another_server_is_never_taken_for_an_orphan(
    services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server process on the same database runs its reaper while this one's lease is
    between its Optuna trials and storing their ids: it ends nothing, and the lease's trials
    train to the end with their Optuna trials."""
    _study(services, "live", max_trials=4)
    other = build_services(Settings(database_url=settings.database_url))
    seen: list[int] = []
    assignments = Leasing._assignments

    def racing(self: Leasing, ids: list[int], sampled: list[Any]) -> Any:
        seen.append(other.protocol.reaping.tidy_optuna())
        return assignments(self, ids, sampled)

    monkeypatch.setattr(Leasing, "_assignments", racing)
    leasing = services.protocol.leasing
    worker = leasing.register("w", "host", 1, "cpu", {}).id
    for _ in range(4):
        [leased] = leasing.lease(worker)
        reporting = services.protocol.reporting
        reporting.report(leased.trial.id, leased.trial.lease_token, 1, {"val_accuracy": 0.5})
        assert reporting.complete(leased.trial.id, leased.trial.lease_token).state == "completed"
    assert seen == [Tidied()] * 4
    states = [t.state for t in _optuna_trials(services, "live")]
    assert states == [OptunaState.COMPLETE] * 4


def test_a_finished_trial_whose_tell_was_lost_is_told_again_a_lease_later(
    services: Services, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies after committing a trial's end and before telling Optuna (its curve,
    deferred to the end in a study without a pruner, and its state): the Optuna trial runs on.
    Not while a live finish may still tell it (a lease's length), then it is told: the same
    state, value and curve the finish would have written."""
    _study(services, "untold", max_trials=2)
    leasing, reporting = services.protocol.leasing, services.protocol.reporting
    reaping = services.protocol.reaping
    worker = leasing.register("w", "host", 1, "cpu", {}).id
    outcomes: list[str] = []
    for value in (0.25, 0.75):
        [leased] = leasing.lease(worker)
        trial, token = leased.trial, leased.trial.lease_token
        reporting.report(trial.id, token, 1, {"val_accuracy": value})
        with monkeypatch.context() as crash:
            # None of what runs after the commit does: the server is gone.
            crash.setattr("service.storage.unit.Unit.later", lambda self, *call: None)
            outcomes.append(reporting.complete(trial.id, token).state)
        clock.advance(1)
    assert outcomes == ["completed", "completed"]
    assert [t.state for t in _optuna_trials(services, "untold")] == [OptunaState.RUNNING] * 2
    assert [t.intermediate_values for t in _optuna_trials(services, "untold")] == [{}, {}]
    assert reaping.tidy_optuna() == Tidied(told=0)  # a live finish may still be telling them
    clock.advance(29)
    assert reaping.tidy_optuna() == Tidied(told=1)  # the first ended 30 s ago, not the second
    clock.advance(1)
    assert reaping.tidy_optuna() == Tidied(told=1)
    assert reaping.tidy_optuna() == Tidied()  # told once; claimed by their trials: no orphans
    trials = _optuna_trials(services, "untold")
    assert [t.state for t in trials] == [OptunaState.COMPLETE] * 2
    assert [t.value for t in trials] == [0.25, 0.75]
    assert [t.intermediate_values for t in trials] == [{1: 0.25}, {1: 0.75}]
    assert [s.row.state for s in services.studies.list()] == ["completed"]


def test_an_orphans_configuration_of_a_finite_space_is_still_handed_out(
    services: Services,
) -> None:
    """A finite space of 2 configurations and 2 trials, and an orphan that a stopped server
    left with one of them: once ended, both trials get a configuration each, the orphan's too
    (counted as tried, the second trial's sampling would fail: none left)."""
    space = {"norm": {"type": "categorical", "choices": ["batch", "layer"]}}
    budget = {"max_trials": 2, "parallel_trials": 2, "epochs": 1}
    view = services.studies.create(spec_doc("finite", budget=budget, space=space))
    storage = services.protocol.context.storage
    orphan = storage.create_new_trial(view.row.optuna_study_id)
    norm = optuna.distributions.CategoricalDistribution(["batch", "layer"])
    storage.set_trial_param(orphan, "norm", norm.to_internal_repr("batch"), norm)
    assert services.protocol.reaping.tidy_optuna() == Tidied(ended=1)
    leasing = services.protocol.leasing
    worker = leasing.register("w", "host", 1, "cpu", {}).id
    leased = leasing.lease(worker, count=2)
    assert sorted(a.trial.params["norm"] for a in leased) == ["batch", "layer"]
