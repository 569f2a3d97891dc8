"""`SamplingStorage` keeps the params of the trials being asked and writes them in one Optuna
transaction, stored exactly as Optuna's own `set_trial_param` stores them, all or nothing; on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import event, text

from service.storage import optuna_trials

DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-4, 0.3, log=True),
    "depth": IntDistribution(1, 4),
    "norm": CategoricalDistribution(["none", "batch", 7, None]),
}
VALUES = {"lr": 0.0123, "depth": 3, "norm": None}


@pytest.fixture
def storage(database_url: str) -> Iterator[RDBStorage]:
    rdb = RDBStorage(database_url)
    yield rdb
    rdb.engine.dispose()


def _study(storage: RDBStorage, name: str = "s") -> int:
    return storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], study_name=name)


def _suggest(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    for name, distribution in DISTRIBUTIONS.items():
        internal = distribution.to_internal_repr(VALUES[name])
        storage.set_trial_param(trial_id, name, internal, distribution)


def _rows(storage: RDBStorage, trial_id: int) -> list[tuple[object, ...]]:
    with storage.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT param_name, param_value, distribution_json FROM trial_params "
                    "WHERE trial_id = :t ORDER BY param_name"
                ),
                {"t": trial_id},
            )
        ]


def test_params_are_stored_as_optunas_own_and_read_back_by_load_study(
    storage: RDBStorage, database_url: str
) -> None:
    study_id = _study(storage)
    plain = storage.create_new_trial(study_id)
    _suggest(storage, plain)  # Optuna's way: one transaction a param
    sampling = optuna_trials.sampling_storage(storage)
    kept = sampling.create_new_trial(study_id)
    _suggest(sampling, kept)
    sampling.set_trial_system_attr(kept, "note", (1, "two"))
    assert _rows(storage, kept) == []  # not written yet
    assert sampling.get_trial(kept).params == VALUES  # but read as if it were
    assert sampling.get_trial(kept).system_attrs == {"note": [1, "two"]}  # as JSON reads back
    sampling.flush()
    assert _rows(storage, kept) == _rows(storage, plain)
    trials = optuna.load_study(study_name="s", storage=database_url).trials
    assert [(t.number, t.state, t.params, t.distributions) for t in trials] == [
        (n, TrialState.RUNNING, VALUES, DISTRIBUTIONS) for n in (0, 1)
    ]
    assert trials[1].system_attrs == {"note": [1, "two"]}


def test_a_pending_trial_is_read_from_memory_and_seen_in_the_studys_trials(
    storage: RDBStorage,
) -> None:
    study_id = _study(storage)
    sampling = optuna_trials.sampling_storage(storage)
    kept = sampling.create_new_trial(study_id)
    statements: list[str] = []
    event.listen(storage.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    trial = sampling.get_trial(kept)  # what `optuna.Trial`'s constructor reads back
    assert statements == []
    assert (trial.number, trial.state, trial.params) == (0, TrialState.RUNNING, {})
    _suggest(sampling, kept)
    [listed] = sampling.get_all_trials(study_id, deepcopy=False, states=[TrialState.RUNNING])
    assert listed.params == VALUES


def test_a_write_that_fails_writes_nothing_of_any_pending_trial(storage: RDBStorage) -> None:
    study_id = _study(storage)
    sampling = optuna_trials.sampling_storage(storage)
    first, second = (sampling.create_new_trial(study_id) for _ in range(2))
    _suggest(sampling, first)
    other = FloatDistribution(0.0, 1.0)  # `norm` was categorical: Optuna refuses the change
    sampling.set_trial_param(second, "norm", 0.5, other)
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        sampling.flush()
    assert _rows(storage, first) == [] and _rows(storage, second) == []
    assert sampling.pending() == []


def test_a_state_change_of_a_pending_trial_writes_its_params_first(storage: RDBStorage) -> None:
    study_id = _study(storage)
    sampling = optuna_trials.sampling_storage(storage)
    kept = sampling.create_new_trial(study_id)
    _suggest(sampling, kept)
    sampling.set_trial_state_values(kept, TrialState.FAIL)
    trial = storage.get_trial(kept)
    assert (trial.state, trial.params) == (TrialState.FAIL, VALUES)


def test_an_abandoned_trial_ends_fail_with_nothing_stored(storage: RDBStorage) -> None:
    study_id = _study(storage)
    sampling = optuna_trials.sampling_storage(storage)
    kept = sampling.create_new_trial(study_id)
    _suggest(sampling, kept)
    sampling.abandon(kept)
    sampling.flush()
    trial = storage.get_trial(kept)
    assert (trial.state, trial.params, trial.system_attrs) == (TrialState.FAIL, {}, {})


def test_reserved_trials_stay_hidden_until_handed_out_in_order(storage: RDBStorage) -> None:
    study_id = _study(storage)
    sampling = optuna_trials.sampling_storage(storage)
    commits: list[object] = []
    event.listen(storage.engine, "commit", commits.append)
    sampling.reserve(study_id, 3)
    assert len(commits) == 1  # three trials, one transaction
    assert sampling.get_all_trials(study_id) == []  # as before any was created
    first = sampling.create_new_trial(study_id)
    _suggest(sampling, first)
    assert [(t.number, t.params) for t in sampling.get_all_trials(study_id)] == [(0, VALUES)]
    second = sampling.create_new_trial(study_id)
    assert [t.number for t in sampling.get_all_trials(study_id)] == [0, 1]
    assert sampling.get_trial(second).number == 1
    sampling.release()  # the third was never handed out
    sampling.flush()
    trials = storage.get_all_trials(study_id)
    assert [(t.number, t.state, t.params) for t in trials] == [
        (0, TrialState.RUNNING, VALUES),
        (1, TrialState.RUNNING, {}),
        (2, TrialState.FAIL, {}),
    ]


def test_a_waiting_trial_is_found_and_then_none_is_reserved(storage: RDBStorage) -> None:
    study_id = _study(storage)
    assert not optuna_trials.has_waiting_trial(storage, study_id)
    study = optuna.load_study(study_name="s", storage=storage)
    study.enqueue_trial({"lr": 0.01})
    assert optuna_trials.has_waiting_trial(storage, study_id)
    sampling = optuna_trials.sampling_storage(storage)
    assert not sampling.reserve(study_id, 2, unless_waiting=True)  # Optuna's ask takes it
    assert [t.state for t in storage.get_all_trials(study_id)] == [TrialState.WAITING]
