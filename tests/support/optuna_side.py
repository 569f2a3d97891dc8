"""What the service's trials look like on Optuna's side, for the domain tests."""

from __future__ import annotations

import optuna

from service.api.deps import Services
from service.storage.unit import reading


def optuna_trial(services: Services, trial_id: int) -> optuna.trial.FrozenTrial:
    """The Optuna trial of the service's trial `trial_id`, as Optuna's storage reads it."""
    with reading(services.db) as stores:
        row = stores.trials.get(trial_id)
        assert row is not None and row.optuna_trial_id is not None
        optuna_id = row.optuna_trial_id
    return services.studies.storage.get_trial(optuna_id)
