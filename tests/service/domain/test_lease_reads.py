"""A lease's cost does not grow with the trials already running (issue 14, the lease's cost):
Optuna's `Study.ask` looks for enqueued trials through its trial cache, which rereads every
unfinished trial of the study; the service asks without that look unless a trial waits, so a
random search reads no other trial to lease one, and `initial` configurations still come
first. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from optuna.storages import RDBStorage

from service.api.deps import Services
from service.app import build_services
from service.settings import Settings
from tests.conftest import spec_doc


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.db.dispose()


def _trials_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many trials each read of Optuna's storage for a study's trials returned."""
    reads: list[int] = []
    original = RDBStorage._get_trials

    def counted(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        trials = original(self, *args, **kwargs)
        reads.append(len(trials))
        return trials

    monkeypatch.setattr(RDBStorage, "_get_trials", counted)
    return reads


def test_leasing_reads_none_of_the_running_trials(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = {"max_trials": 30, "parallel_trials": 30, "epochs": 5}
    services.studies.create(spec_doc(budget=budget))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    first = leasing.lease(worker, count=20)
    reads = _trials_read(monkeypatch)
    later = leasing.lease(worker, count=10)
    assert [a.trial.number for a in first + later] == list(range(30))
    assert len({a.trial.params["lr"] for a in first + later}) == 30  # each sampled
    assert all(1e-4 <= a.trial.params["lr"] <= 0.1 for a in later)
    assert sum(reads) == 0, reads  # was 10 reads of 20 to 29 running trials each


def test_initial_configurations_are_still_leased_first(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = {"max_trials": 6, "parallel_trials": 6, "epochs": 5}
    initial = [{"lr": 0.01, "norm": "batch"}, {"lr": 0.02, "norm": "layer"}]
    services.studies.create(spec_doc(budget=budget, initial=initial))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    got = leasing.lease(worker, count=4)
    assert [a.trial.params for a in got[:2]] == initial
    assert all(a.trial.params not in initial for a in got[2:])
    reads = _trials_read(monkeypatch)
    leasing.lease(worker, count=2)
    assert sum(reads) == 0, reads  # none waits any more: no look
