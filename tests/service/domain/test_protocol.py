"""Leases against the domain layer with a controllable clock: expiry, re-lease, attempts."""

from __future__ import annotations

import pytest

from hpo.protocol import Decision, TrialState
from service.api.deps import Services
from service.domain.errors import StaleLease
from tests.conftest import spec_doc
from tests.support.clock import Clock


def _worker(services: Services, name: str) -> int:
    return services.protocol.leasing.register(name, "host", 1, "cpu", {}).id


def test_vanished_worker_loses_its_lease_and_trial_is_handed_out_again(
    services: Services, clock: Clock
) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 1, "parallel_trials": 1, "epochs": 3}))
    dead, alive = _worker(services, "dead"), _worker(services, "alive")
    [first] = services.protocol.leasing.lease(dead)
    services.protocol.reporting.report(
        first.trial.id, first.trial.lease_token, 1, {"val_accuracy": 1}
    )
    clock.advance(29)
    assert services.protocol.leasing.lease(alive) == []  # still leased: parallel_trials is 1
    clock.advance(2)
    [again] = services.protocol.leasing.lease(alive)
    assert again.trial.id == first.trial.id
    assert again.trial.attempt == 2
    assert again.trial.params == first.trial.params
    assert again.start_epoch == 0 and again.trial.epochs == 0  # the dead attempt's curve is gone
    with pytest.raises(StaleLease):  # the presumed-dead worker comes back: 409, nothing changes
        services.protocol.reporting.report(first.trial.id, first.trial.lease_token, 2, {})
    with pytest.raises(StaleLease):
        services.protocol.reporting.complete(first.trial.id, first.trial.lease_token)
    for epoch in (1, 2, 3):
        services.protocol.reporting.report(
            again.trial.id, again.trial.lease_token, epoch, {"val_accuracy": 0.5}
        )
    assert services.protocol.reporting.complete(again.trial.id, again.trial.lease_token).state == (
        "completed"
    )


def test_after_max_attempts_the_trial_fails(services: Services, clock: Clock) -> None:
    view = services.studies.create(
        spec_doc(budget={"max_trials": 1, "parallel_trials": 1, "epochs": 3})
    )
    worker = _worker(services, "flaky")
    for attempt in (1, 2, 3):
        [assignment] = services.protocol.leasing.lease(worker)
        assert assignment.trial.attempt == attempt
        clock.advance(31)
    assert services.protocol.reaping.reap() == 1
    study = services.studies.get(view.row.id)
    assert study.counts[TrialState.FAILED] == 1
    assert study.row.state == "failed"
    detail = services.studies.trial(assignment.trial.id)
    assert "3 times" in (detail.row.reason or "")


def test_heartbeats_keep_a_slow_trial_alive(services: Services, clock: Clock) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 1, "parallel_trials": 1, "epochs": 1}))
    worker = _worker(services, "slow")
    [assignment] = services.protocol.leasing.lease(worker)
    lease = [(assignment.trial.id, assignment.trial.lease_token or "")]
    for _ in range(10):  # ten minutes inside one epoch, a heartbeat every 20 s
        clock.advance(20)
        assert services.protocol.leasing.heartbeat(worker, lease) == {
            assignment.trial.id: Decision.CONTINUE
        }
        assert services.protocol.reaping.reap() == 0
    assert services.protocol.leasing.heartbeat(worker, [(assignment.trial.id, "wrong")]) == {
        assignment.trial.id: Decision.STOP
    }


def test_grid_hands_out_each_point_once_and_then_nothing(services: Services) -> None:
    doc = spec_doc(
        strategy={"kind": "grid", "seed": 3},
        budget={"parallel_trials": 50},
        space={
            "lr": {"type": "float", "values": [0.1, 0.01, 0.001]},
            "norm": {"type": "categorical", "choices": ["none", "batch"]},
        },
    )
    services.studies.create(doc)
    worker = _worker(services, "w")
    got = services.protocol.leasing.lease(worker, count=10)
    points = sorted((a.trial.params["lr"], a.trial.params["norm"]) for a in got)
    assert points == sorted((lr, n) for lr in (0.1, 0.01, 0.001) for n in ("none", "batch"))


def test_a_trial_reserved_but_never_sampled_is_sampled_when_leased_again(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies after the lease's commit and before Optuna samples the new trial's
    params (the answer is lost as well): the worker's next lease, which holds nothing, gets
    that trial back with params, instead of a trial that stays leased and never trains."""
    services.studies.create(spec_doc(budget={"max_trials": 2, "parallel_trials": 1, "epochs": 2}))
    worker = _worker(services, "w")
    leasing = services.protocol.leasing
    with monkeypatch.context() as crash:
        crash.setattr(type(leasing), "_ask", lambda self, item: None)  # Optuna never asked
        crash.setattr(type(leasing), "_assignments", lambda self, ids, sampled: [])  # dies
        assert leasing.lease(worker, held=[]) == []  # reserved, never sampled, never heard of
    [again] = leasing.lease(worker, held=[])
    assert again.trial.number == 0 and again.trial.params is not None
    assert again.trial.optuna_trial_id is not None
    assert set(again.trial.params) == {"lr", "norm"}
