"""The worker protocol as a state machine: Hypothesis drives lease / heartbeat / report /
complete / fail / release / expire (and writes by workers whose lease was taken) in random
interleavings against the domain layer, with a clock it controls, and checks after every step:

- at most one live lease per trial, and only its current token is accepted;
- a finished trial never changes (state, value, epochs, reason, curve);
- the counts add up to the trials, and the study settles exactly when they are all finished;
- the grid never hands a point out twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hpo.protocol import Decision, TrialReport, TrialState
from service.api.deps import Services
from service.app import build_services
from service.domain.errors import StaleLease
from service.settings import Settings
from tests.conftest import spec_doc
from tests.support.clock import Clock

LEASE = 10  # seconds
GRID = {
    "lr": {"type": "float", "values": [0.1, 0.01, 0.001]},
    "norm": {"type": "categorical", "choices": ["none", "batch"]},
}
EPOCHS = 3
VALUES = st.one_of(st.floats(0, 1), st.just(math.nan), st.just(math.inf))


@dataclass
class Held:
    """A lease as the worker holding it sees it."""

    worker: int
    token: str
    expires: datetime
    heard: bool = True  # False: the answer carrying it was lost; the worker never saw it


def _snapshot(services: Services, trial_id: int) -> tuple[Any, ...]:
    detail = services.studies.trial(trial_id)
    row = detail.row
    value = "nan" if row.value is not None and math.isnan(row.value) else row.value
    curve = [(m.epoch, repr(sorted(m.metrics.items()))) for m in detail.curve]
    return (row.state, value, row.epochs, row.reason, row.finished_at, row.attempt, curve)


class ProtocolMachine(RuleBasedStateMachine):
    names = count()

    def __init__(self, services: Services, clock: Clock) -> None:
        super().__init__()
        self.services, self.clock, self.protocol = services, clock, services.protocol
        self.held: dict[int, Held] = {}  # trial id -> the one live lease the model knows of
        self.stale: list[tuple[int, int, str]] = []  # (worker, trial, token) taken away
        self._attempts: dict[int, int] = {}  # trial id -> its attempt when last handed out
        self.finished: dict[int, tuple[Any, ...]] = {}
        self.study_id = 0
        self.workers: list[int] = []

    @initialize()
    def create_study(self) -> None:
        doc = spec_doc(
            f"machine-{next(self.names)}",
            strategy={"kind": "grid"},
            budget={"parallel_trials": 3, "epochs": EPOCHS},
            space=GRID,
        )
        self.study_id = self.services.studies.create(doc).row.id
        self.workers = [
            self.protocol.leasing.register(f"w{i}", "host", i, "cpu", {}).id for i in range(3)
        ]

    def teardown(self) -> None:
        if self.study_id:
            self.services.studies.delete(self.study_id)  # the next example starts clean

    # -- what workers do ------------------------------------------------------------------

    @rule(worker=st.integers(0, 2), n=st.integers(1, 3), lost=st.booleans())
    def lease(self, worker: int, n: int, lost: bool) -> None:
        self._granted(worker, self.protocol.leasing.lease(self.workers[worker], n), heard=not lost)

    @rule(worker=st.integers(0, 2), n=st.integers(1, 3))
    def lease_naming_the_trials_held(self, worker: int, n: int) -> None:
        """A worker that says what it trains gets the trials of its lost answers queued again
        (then possibly handed to it again, with a new token)."""
        mine = {t: h for t, h in self.held.items() if h.worker == worker}
        held = [t for t, h in mine.items() if h.heard]
        granted = self.protocol.leasing.lease(self.workers[worker], n, held=held)
        for trial_id, lease in mine.items():
            if not lease.heard:
                del self.held[trial_id]
                self.stale.append((worker, trial_id, lease.token))
                row = self.services.studies.trial(trial_id).row
                assert row.state in ("queued", "running") and row.lease_token != lease.token
                assert row.attempt == self._attempts[trial_id]  # not counted as an attempt
        self._granted(worker, granted, heard=True)

    def _granted(self, worker: int, granted: list[Any], heard: bool) -> None:
        for assignment in granted:
            trial = assignment.trial
            assert trial.study_id == self.study_id
            live = self.held.get(trial.id)
            assert live is None or live.expires < self.clock.now, "two live leases of a trial"
            assert trial.id not in self.finished, "a finished trial was handed out again"
            assert trial.lease_token is not None and trial.lease_expires_at is not None
            self.held[trial.id] = Held(worker, trial.lease_token, trial.lease_expires_at, heard)
            self._attempts[trial.id] = trial.attempt

    @rule(worker=st.integers(0, 2))
    def heartbeat(self, worker: int) -> None:
        mine = [(t, h.token) for t, h in self.held.items() if h.worker == worker and h.heard]
        stale = [(t, tok) for w, t, tok in self.stale if w == worker and t not in dict(mine)]
        decisions = self.protocol.leasing.heartbeat(self.workers[worker], mine + stale)
        for trial_id, _ in mine:
            assert decisions[trial_id] is Decision.CONTINUE
            self.held[trial_id].expires = self.clock.now + timedelta(seconds=LEASE)
        for trial_id, _ in stale:
            assert decisions[trial_id] is Decision.STOP

    def _heard(self) -> list[int]:
        return sorted(t for t, h in self.held.items() if h.heard)

    @precondition(lambda self: self._heard())
    @rule(data=st.data(), value=VALUES, repeat=st.booleans())
    def report(self, data: st.DataObject, value: float, repeat: bool) -> None:
        trial_id = data.draw(st.sampled_from(self._heard()))
        held = self.held[trial_id]
        epochs = self.services.studies.trial(trial_id).row.epochs
        epoch = max(1, epochs) if repeat else min(epochs + 1, EPOCHS)
        before = _snapshot(self.services, trial_id)
        decision = self.protocol.reporting.report(
            trial_id, held.token, epoch, {"val_accuracy": value}
        )
        assert decision is Decision.CONTINUE
        held.expires = self.clock.now + timedelta(seconds=LEASE)
        if epoch <= epochs:  # a repeated report of an epoch changes nothing
            assert _snapshot(self.services, trial_id) == before

    @precondition(lambda self: self._heard() or self.stale)
    @rule(data=st.data(), value=VALUES)
    def report_batch(self, data: st.DataObject, value: float) -> None:
        """One batched report with epochs of several held trials (next or repeated) and writes
        with tokens taken away: each held item continues, each stale one is refused (or, for a
        finished trial, answered) and changes nothing, whatever the other items did."""
        live = (
            data.draw(st.lists(st.sampled_from(self._heard()), unique=True))
            if self._heard()
            else []
        )
        zombies = data.draw(st.lists(st.sampled_from(self.stale), max_size=2)) if self.stale else []
        items: list[TrialReport] = []
        repeats: dict[int, tuple[Any, ...]] = {}
        for trial_id in live:
            epochs = self.services.studies.trial(trial_id).row.epochs
            epoch = max(1, epochs) if data.draw(st.booleans()) else min(epochs + 1, EPOCHS)
            if epoch <= epochs:
                repeats[trial_id] = _snapshot(self.services, trial_id)
            metrics = {"val_accuracy": value}
            items.append(
                TrialReport(
                    trial_id=trial_id, token=self.held[trial_id].token, epoch=epoch, metrics=metrics
                )
            )
        untouched = {t: _snapshot(self.services, t) for _w, t, _tok in zombies if t not in live}
        for _worker, trial_id, token in zombies:
            metrics = {"val_accuracy": 1.0}
            items.append(TrialReport(trial_id=trial_id, token=token, epoch=1, metrics=metrics))
        order = data.draw(st.permutations(range(len(items))))
        outcomes = self.protocol.reporting.report_many([items[i] for i in order])
        for position, outcome in zip(order, outcomes, strict=True):
            item = items[position]
            if position < len(live):
                assert outcome is Decision.CONTINUE
                self.held[item.trial_id].expires = self.clock.now + timedelta(seconds=LEASE)
            elif isinstance(outcome, Decision):
                assert item.trial_id in self.finished, "a zombie's batched report was accepted"
            else:
                assert isinstance(outcome, StaleLease)
        for trial_id, before in {**repeats, **untouched}.items():
            assert _snapshot(self.services, trial_id) == before

    @precondition(lambda self: self._heard())
    @rule(
        data=st.data(),
        how=st.sampled_from(["complete", "complete_with_reports", "fail", "release"]),
        value=VALUES,
    )
    def end(self, data: st.DataObject, how: str, value: float) -> None:
        trial_id = data.draw(st.sampled_from(self._heard()))
        held = self.held.pop(trial_id)
        if how.startswith("complete"):
            # With reports: its remaining epochs travel with the completion (as hpo worker
            # sends a trial's last ones), recorded before it completes.
            epochs = self.services.studies.trial(trial_id).row.epochs
            reports = [(e, {"val_accuracy": value}) for e in range(epochs + 1, EPOCHS + 1)]
            sent = reports if how == "complete_with_reports" else []
            row = self.protocol.reporting.complete(trial_id, held.token, reports=sent)
            finite = row.value is not None and math.isfinite(row.value)
            assert row.state == ("completed" if row.epochs and finite else "failed")
            if sent:
                curve = self.services.studies.trial(trial_id).curve
                assert [point.epoch for point in curve] == list(range(1, EPOCHS + 1))
        elif how == "fail":
            assert self.protocol.reporting.fail(trial_id, held.token, "broken").state == "failed"
        else:
            assert self.protocol.reporting.release(trial_id, held.token).state == "queued"
            self.stale.append((held.worker, trial_id, held.token))
            return
        self.finished[trial_id] = _snapshot(self.services, trial_id)
        self.stale.append((held.worker, trial_id, held.token))

    @precondition(lambda self: self.stale)
    @rule(
        data=st.data(),
        how=st.sampled_from(["report", "complete", "complete_with_reports", "fail", "release"]),
    )
    def zombie_writes(self, data: st.DataObject, how: str) -> None:
        """A worker writes with a token it no longer holds: 409 unless the trial has finished
        (then the write may be answered as a repeat), and never any change."""
        _worker, trial_id, token = data.draw(st.sampled_from(self.stale))
        before = _snapshot(self.services, trial_id)
        writes = {
            "report": lambda: self.protocol.reporting.report(
                trial_id, token, 1, {"val_accuracy": 1}
            ),
            "complete": lambda: self.protocol.reporting.complete(trial_id, token),
            "complete_with_reports": lambda: self.protocol.reporting.complete(
                trial_id, token, reports=[(1, {"val_accuracy": 1.0})]
            ),
            "fail": lambda: self.protocol.reporting.fail(trial_id, token, "zombie"),
            "release": lambda: self.protocol.reporting.release(trial_id, token),
        }
        try:
            writes[how]()
        except StaleLease:
            pass
        else:
            assert trial_id in self.finished, f"a zombie's {how} was accepted"
        assert _snapshot(self.services, trial_id) == before

    @rule(seconds=st.integers(1, 2 * LEASE))
    def time_passes_and_the_reaper_runs(self, seconds: int) -> None:
        self.clock.now += timedelta(seconds=seconds)
        self.protocol.reaping.reap()
        for trial_id, held in list(self.held.items()):
            if held.expires < self.clock.now:
                del self.held[trial_id]
                self.stale.append((held.worker, trial_id, held.token))
                row = self.services.studies.trial(trial_id).row
                if row.state == "failed":  # its attempts are used up
                    assert row.reason == f"its worker vanished {row.attempt} times (lease expired)"
                    self.finished[trial_id] = _snapshot(self.services, trial_id)
                else:
                    assert row.state == "queued" and row.lease_token is None

    # -- what must always hold ------------------------------------------------------------

    @invariant()
    def one_live_lease_per_trial_and_only_its_token_counts(self) -> None:
        if not self.study_id:
            return
        for row in self.services.studies.trials(self.study_id, limit=1000).items:
            held = self.held.get(row.id)
            if row.state == "running":
                assert held is not None and row.lease_token == held.token
                assert row.lease_expires_at == held.expires
            else:
                assert held is None and row.lease_expires_at is None

    @invariant()
    def finished_trials_never_change(self) -> None:
        for trial_id, snapshot in self.finished.items():
            assert _snapshot(self.services, trial_id) == snapshot

    @invariant()
    def counts_add_up_and_the_study_settles_when_all_are_finished(self) -> None:
        if not self.study_id:
            return
        view = self.services.studies.get(self.study_id)
        rows = self.services.studies.trials(self.study_id, limit=1000).items
        assert sum(view.counts.values()) == len(rows) == view.row.n_trials
        assert view.counts[TrialState.RUNNING] <= 3
        done = (
            view.counts[TrialState.COMPLETED]
            + view.counts[TrialState.PRUNED]
            + view.counts[TrialState.FAILED]
        )
        assert done == len(self.finished)
        assert view.row.state == ("running" if done < view.row.max_trials else view.row.state)
        if done == view.row.max_trials:
            assert view.row.state in ("completed", "failed")

    @invariant()
    def the_grid_hands_each_point_out_once(self) -> None:
        if not self.study_id:
            return
        rows = self.services.studies.trials(self.study_id, limit=1000).items
        points = [tuple(sorted((row.params or {}).items())) for row in rows if row.params]
        assert len(points) == len(set(points)) <= 6


MACHINE_SETTINGS = hypothesis_settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
def test_protocol_state_machine(settings: Settings) -> None:
    clock = Clock()
    services = build_services(
        Settings(database_url=settings.database_url, lease_seconds=LEASE, max_attempts=2)
    )
    services.protocol.context.clock = clock
    run_state_machine_as_test(
        lambda: ProtocolMachine(services, clock),
        settings=MACHINE_SETTINGS,
    )
