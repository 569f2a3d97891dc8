"""What a server killed in the middle of a lease leaves in Optuna's tables, and what the next
server makes of it: real `hpo server` and `hpo worker` processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState as OptunaState

from service.app import build_services
from service.domain.reaping import ORPHAN_REASON, Tidied
from service.settings import Settings
from tests.conftest import ApiWorker, Processes, in_threads, postgres_database, spec_doc
from tests.support import api
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "postgres":
        with postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{folder / 'orphans.db'}"


def _optuna_states(url: str) -> list[tuple[int, OptunaState]]:
    """(number, state) of each trial, as a user's `optuna.load_study` shows them."""
    trials = optuna.load_study(study_name="orphans", storage=url).trials
    return [(t.number, t.state) for t in trials]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_server_ends_the_optuna_trials_a_killed_server_left_and_the_study_completes(
    processes: Processes, tmp_path: Path, kind: str
) -> None:
    with _database(kind, tmp_path) as url:
        first = processes.server("first", HPO_DATABASE_URL=url)
        doc = spec_doc("orphans", budget={"max_trials": 3, "parallel_trials": 1, "epochs": 1})
        study = api.create_study(first, doc)
        processes.process("first").kill()
        processes.process("first").wait()
        # What a server killed in a lease leaves: running Optuna trials that no trial of the
        # service names, one without params (killed between creating the lease's trials and
        # writing their params) and one with them (killed before storing its Optuna id).
        storage = optuna.storages.RDBStorage(url)
        optuna_id = storage.get_study_id_from_name("orphans")
        bare = storage.create_new_trial(optuna_id)
        sampled = storage.create_new_trial(optuna_id)
        lr = FloatDistribution(1e-4, 0.1, log=True)
        storage.set_trial_param(sampled, "lr", lr.to_internal_repr(0.01), lr)
        storage.engine.dispose()
        assert _optuna_states(url) == [(0, OptunaState.RUNNING), (1, OptunaState.RUNNING)]

        second = processes.server("second", HPO_DATABASE_URL=url)
        ended = [(0, OptunaState.FAIL), (1, OptunaState.FAIL)]
        wait_for(lambda: _optuna_states(url) == ended, 30, "the orphans to be ended")
        trials = optuna.load_study(study_name="orphans", storage=url).trials
        assert [t.system_attrs.get("hpo:orphaned") for t in trials] == [ORPHAN_REASON] * 2
        assert [t._trial_id for t in trials] == [bare, sampled]
        assert [t.params for t in trials] == [{}, {"lr": 0.01}]
        assert "ended 2 orphaned Optuna trial(s) FAIL" in processes.log("second")

        processes.worker("w", second, HPO_DATABASE_URL=url)
        view = api.finished(second, study["id"], 180)
        assert view["state"] == "completed" and view["counts"]["completed"] == 3
        assert [t["number"] for t in api.study_trials(second, study["id"])] == [0, 1, 2]
        # Optuna's view: the two orphans ended FAIL, the study's three trials after them.
        assert _optuna_states(url) == ended + [(n, OptunaState.COMPLETE) for n in (2, 3, 4)]
        processes.stop_all()


def test_another_servers_clean_up_all_along_ends_nothing_of_two_processes_leasing(
    processes: Processes,
) -> None:
    """`hpo server --processes 2` hands out 48 trials to 8 clients at once while a third
    server's clean-up (as on another machine, on the same PostgreSQL database) runs round after
    round: every lease it catches half-way is left alone, so it ends and tells nothing, and
    Optuna shows the 48 trials running with their params."""
    doc = spec_doc("busy", budget={"max_trials": 48, "parallel_trials": 48, "epochs": 1})
    with postgres_database() as url:
        server = processes.server("server", "--processes", "2", HPO_DATABASE_URL=url)
        api.create_study(server, doc)
        other = build_services(Settings(database_url=url))
        stop, rounds = threading.Event(), []

        def tidy() -> None:
            while not stop.wait(0.01):
                rounds.append(other.protocol.reaping.tidy_optuna())

        def lease_until_empty(i: int) -> None:
            worker = ApiWorker(api.FreshConnections(server), f"w{i}")
            while worker.lease(count=2):
                pass

        tidying = threading.Thread(target=tidy)
        tidying.start()
        try:
            assert in_threads(8, lease_until_empty) == []
        finally:
            stop.set()
            tidying.join(60)
        rounds.append(other.protocol.reaping.tidy_optuna())
        trials = optuna.load_study(study_name="busy", storage=url).trials
        other.db.dispose()
        processes.stop_all()  # before the database goes away under them
    assert len(rounds) > 10
    assert [r for r in rounds if r != Tidied()] == []
    assert len(trials) == 48 and {t.state for t in trials} == {OptunaState.RUNNING}
    assert all(set(t.params) == {"lr", "norm"} for t in trials)
    assert not any("hpo:orphaned" in t.system_attrs for t in trials)
