"""A completion with its trial's last reports in one transaction of the service's (issue 14,
a trial's end off the training path): the reports are recorded and the trial completed
together, unless a pruner must be asked about the reported values after their commit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from hpo.protocol import TrialState
from service.api.deps import Services
from service.app import build_services
from service.domain.errors import StaleLease
from service.settings import Settings
from service.storage.unit import reading
from tests.conftest import spec_doc


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.db.dispose()


def _leased(services: Services, **strategy: Any) -> tuple[int, str]:
    doc = spec_doc(budget={"max_trials": 2, "parallel_trials": 2, "epochs": 2})
    doc["strategy"].update(strategy)
    services.studies.create(doc)
    leasing = services.protocol.leasing
    worker = leasing.register("w", "h", 1, "cpu", {}).id
    [got] = leasing.lease(worker, count=1, held=[])
    return got.trial.id, str(got.trial.lease_token)


def _commits(services: Services, call: Any) -> tuple[Any, int]:
    commits: list[object] = []

    def committed(connection: object) -> None:
        commits.append(connection)

    event.listen(services.db.engine, "commit", committed)
    try:
        result = call()
    finally:
        event.remove(services.db.engine, "commit", committed)
    return result, len(commits)


REPORTS = [(1, {"val_accuracy": 0.5}), (2, {"val_accuracy": 0.75})]


def test_a_completion_with_its_reports_is_one_transaction(services: Services) -> None:
    trial_id, token = _leased(services)
    reporting = services.protocol.reporting
    done, commits = _commits(
        services, lambda: reporting.complete(trial_id, token, {"test_accuracy": 0.7}, REPORTS)
    )
    assert commits == 1  # was 2: the reports, then the completion
    assert done.state is TrialState.COMPLETED and done.value == 0.75
    with reading(services.db) as stores:
        trial = stores.trials.get(trial_id)
        curve = stores.curves.of_trial(trial_id)
    assert trial is not None and trial.state is TrialState.COMPLETED and trial.epochs == 2
    assert trial.test_metrics == {"test_accuracy": 0.7}
    assert [(p.epoch, p.metrics["val_accuracy"]) for p in curve] == [(1, 0.5), (2, 0.75)]
    # A repeat (the answer was lost) hears the same state and changes nothing.
    again = reporting.complete(trial_id, token, {"test_accuracy": 0.1}, REPORTS)
    assert again.state is TrialState.COMPLETED and again.test_metrics == {"test_accuracy": 0.7}


def test_a_stale_token_with_reports_writes_nothing(services: Services) -> None:
    trial_id, _token = _leased(services)
    with pytest.raises(StaleLease):
        services.protocol.reporting.complete(trial_id, "not-the-token", None, REPORTS)
    with reading(services.db) as stores:
        trial = stores.trials.get(trial_id)
        assert trial is not None and trial.state is TrialState.RUNNING and trial.epochs == 0
        assert stores.curves.of_trial(trial_id) == []


def test_with_a_pruner_the_reports_are_committed_before_it_is_asked(services: Services) -> None:
    trial_id, token = _leased(services, early_stopping="median")
    reporting = services.protocol.reporting
    done, commits = _commits(services, lambda: reporting.complete(trial_id, token, None, REPORTS))
    assert done.state is TrialState.COMPLETED
    assert commits == 2  # the reports, the pruner's question, then the completion
