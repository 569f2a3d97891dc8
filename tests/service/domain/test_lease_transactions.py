"""A lease in few transactions of the service's (issue 14, the request path): one read-only look
for expired and unheard leases, the reservation, then the sampled params stored together with
the answer read back; a sampler that fails fails its own trial, not the lease."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from hpo.protocol import TrialState
from service.api.deps import Services
from service.app import build_services
from service.domain import search
from service.settings import Settings
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


def test_a_failing_sampler_fails_its_trial_and_the_lease_goes_on(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 3, "parallel_trials": 3, "epochs": 2}))
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    ask = search.ask

    def failing_first(cache: Any, name: str, study_id: int, spec: Any, number: int) -> Any:
        if number == 0:
            raise ValueError("the sampler broke")
        return ask(cache, name, study_id, spec, number)

    monkeypatch.setattr(search, "ask", failing_first)
    [got] = leasing.lease(worker, count=2, held=[])
    assert got.trial.number == 1 and got.trial.params is not None
    with reading(services.db) as stores:
        [first] = [t for t in stores.trials.of_study(got.study.id) if t.number == 0]
    assert first.state is TrialState.FAILED
    assert first.reason == "sampling failed: the sampler broke"
