"""What a trial's `started_at` means (docs/web.md, "A trial's start and duration"): the time
its first lease was granted, also for a trial leased ahead, which the worker starts training
only when the trial before it ends; a trial queued again and re-leased keeps it."""

from __future__ import annotations

from datetime import timedelta

from service.api.deps import Services
from tests.conftest import spec_doc
from tests.support.clock import Clock


def test_a_trial_leased_ahead_starts_when_leased_and_keeps_that_start_when_leased_again(
    services: Services, clock: Clock
) -> None:
    services.studies.create(spec_doc(budget={"max_trials": 2, "parallel_trials": 3, "epochs": 1}))
    leasing, reporting = services.protocol.leasing, services.protocol.reporting
    worker = leasing.register("w", "host", 1, "cpu", {}).id
    first_leased = clock.now
    [first] = leasing.lease(worker)
    clock.advance(9.75)  # the first trial's last epoch has a quarter of a second to go
    ahead_leased = clock.now
    [ahead] = leasing.lease(worker, held=[first.trial.id], ahead=True)
    clock.advance(0.25)
    reporting.report(first.trial.id, first.trial.lease_token, 1, {"val_accuracy": 0.5})
    reporting.complete(first.trial.id, first.trial.lease_token)
    # The worker is told to stop before it trains the trial leased ahead: it gives it back.
    reporting.release(ahead.trial.id, ahead.trial.lease_token)
    clock.advance(60)
    [again] = leasing.lease(worker)
    assert again.trial.id == ahead.trial.id
    clock.advance(5)
    reporting.report(again.trial.id, again.trial.lease_token, 1, {"val_accuracy": 0.5})
    reporting.complete(again.trial.id, again.trial.lease_token)
    first_row = services.studies.trial(first.trial.id).row
    ahead_row = services.studies.trial(ahead.trial.id).row
    assert first_row.started_at == first_leased
    assert first_row.finished_at == first_leased + timedelta(seconds=10)
    assert ahead_row.started_at == ahead_leased  # not the second lease's time
    assert ahead_row.finished_at == ahead_leased + timedelta(seconds=65.25)
