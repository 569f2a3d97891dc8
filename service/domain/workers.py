"""What the server decides about a worker: whether it can run a study, and whether it is stale."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hpo.protocol import WorkerState
from service.domain.spec import BUILTIN_DATASETS, BUILTIN_MODELS, DATASET_PREFIXES, StudySpec


def can_run(capabilities: dict[str, Any] | None, spec: StudySpec) -> bool:
    """Whether a worker with these plugin names has the model and dataset the study names."""
    caps = capabilities or {}
    model, dataset = spec.workload.model, spec.workload.dataset
    model_ok = model in BUILTIN_MODELS or model in caps.get("models", [])
    dataset_ok = (
        dataset in BUILTIN_DATASETS
        or dataset.startswith(DATASET_PREFIXES)
        or dataset in caps.get("datasets", [])
    )
    return model_ok and dataset_ok


def is_stale(state: WorkerState, last_seen_at: datetime, now: datetime, after: timedelta) -> bool:
    """The one rule for a stale worker: registered, not gone, and not seen for longer than
    `after` (the settings' `stale_worker_seconds`). A stale worker still holds its leases until
    they expire; it just no longer counts as able to run anything."""
    return state is WorkerState.ACTIVE and now - last_seen_at > after
