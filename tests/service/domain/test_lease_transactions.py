"""A lease in few transactions of the service's (issue 14, the request path): one read-only look
for expired and unheard leases, the reservation, then the sampled params stored together with
the answer read back; a sampler that fails fails its own trial, not the lease, and leaves no
half-written trial in Optuna's tables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from sqlalchemy import event

from hpo.protocol import TrialState
from service.api.deps import Services
from service.app import build_services
from service.settings import Settings
from service.storage import optuna_trials
from service.storage.unit import reading
from tests.conftest import spec_doc


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.db.dispose()


def test_a_lease_of_a_new_trial_takes_three_transactions_of_the_service(
    services: Services,
) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 3, "parallel_trials": 3, "epochs": 2}))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    commits: list[object] = []

    def committed(connection: object) -> None:
        commits.append(connection)

    event.listen(services.db.engine, "commit", committed)
    try:
        got = leasing.lease(worker, count=2, held=[])
    finally:
        event.remove(services.db.engine, "commit", committed)
    assert [a.trial.number for a in got] == [0, 1]
    assert all(a.trial.params and a.trial.optuna_trial_id for a in got)
    assert len(commits) == 3  # the look (expired or unheard), the reservation, the params
    with reading(services.db) as stores:
        stored = [stores.trials.get(a.trial.id) for a in got]
    assert [t.params for t in stored if t is not None] == [a.trial.params for a in got]


def test_a_sampler_failing_halfway_fails_its_trial_and_leaves_nothing_half_written(
    services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 3, "parallel_trials": 3, "epochs": 2}))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    sample = optuna.samplers.RandomSampler.sample_independent

    def broken_at_norm(self: Any, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        if trial.number == 0 and name == "norm":  # after lr was suggested
            raise ValueError("the sampler broke")
        return sample(self, study, trial, name, distribution)

    monkeypatch.setattr(optuna.samplers.RandomSampler, "sample_independent", broken_at_norm)
    [got] = leasing.lease(worker, count=2, held=[])
    assert got.trial.number == 1 and got.trial.params is not None
    with reading(services.db) as stores:
        [first] = [t for t in stores.trials.of_study(got.study.id) if t.number == 0]
    assert first.state is TrialState.FAILED
    assert first.reason == "sampling failed: the sampler broke"
    assert first.params is None
    # Optuna's trial of it ended FAIL with nothing of the sampling stored (its lr was kept in
    # memory only); the other trial's params are all there.
    trials = optuna.load_study(study_name="s1", storage=settings.database_url).trials
    assert [(t.number, t.state, t.params) for t in trials] == [
        (0, optuna.trial.TrialState.FAIL, {}),
        (1, optuna.trial.TrialState.RUNNING, got.trial.params),
    ]
    [third] = leasing.lease(worker, count=1, held=[got.trial.id])  # the study goes on
    assert third.trial.number == 2 and set(third.trial.params or {}) == {"lr", "norm"}


def test_a_failed_write_of_the_params_fails_the_trials_of_the_lease(
    services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = services.studies.create(
        spec_doc(budget={"max_trials": 3, "parallel_trials": 3, "epochs": 2})
    ).row.id
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    write = optuna_trials.write_sampled

    def failing(*args: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(optuna_trials, "write_sampled", failing)
    assert leasing.lease(worker, count=2, held=[]) == []
    with reading(services.db) as stores:
        trials = stores.trials.of_study(study_id)
    assert [(t.number, t.state, t.reason) for t in trials] == [
        (n, TrialState.FAILED, "sampling failed: the database went away") for n in (0, 1)
    ]
    told = optuna.load_study(study_name="s1", storage=settings.database_url).trials
    assert [(t.number, t.state, t.params) for t in told] == [
        (n, optuna.trial.TrialState.FAIL, {}) for n in (0, 1)
    ]
    monkeypatch.setattr(optuna_trials, "write_sampled", write)
    [third] = leasing.lease(worker, count=1, held=[])
    assert third.trial.number == 2 and third.trial.params is not None


def test_a_lease_that_breaks_on_its_way_out_leaves_nothing_for_the_next(
    services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 4, "parallel_trials": 4, "epochs": 2}))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    release = optuna_trials.SamplingStorage.release

    def broken(self: optuna_trials.SamplingStorage) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(optuna_trials.SamplingStorage, "release", broken)
    assert leasing.lease(worker, count=2, held=[]) == []  # both fail, "sampling failed: ..."
    monkeypatch.setattr(optuna_trials.SamplingStorage, "release", release)
    got = leasing.lease(worker, count=2, held=[])
    assert [a.trial.number for a in got] == [2, 3]
    told = optuna.load_study(study_name="s1", storage=settings.database_url).trials
    # the first two were sampled but never written: their params went nowhere
    assert [(t.number, t.params == {}) for t in told] == [
        (0, True),
        (1, True),
        (2, False),
        (3, False),
    ]
    assert [t.params for t in told[2:]] == [a.trial.params for a in got]
