"""The service's state in numbers: studies, trials, leases and workers by state, read in one
transaction. What `/metrics` reports; every server process behind one database reads the same."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hpo.protocol import StudyState, TrialState
from service.domain.workers import is_stale
from service.storage.db import Database
from service.storage.unit import reading

WORKER_STATES = ("active", "stale", "gone")


@dataclass(frozen=True)
class Counts:
    studies: dict[StudyState, int]
    trials: dict[TrialState, int]
    trials_by_study: dict[str, dict[TrialState, int]]
    leases_active: int
    leases_expired: int
    workers: dict[str, int]  # active, stale (active but silent), gone


def read_counts(db: Database, now: datetime, stale_after: timedelta) -> Counts:
    """Every state present in each count (0 when nothing is in it)."""
    with reading(db) as stores:
        studies = stores.studies.count_by_state()
        by_study = {name: dict.fromkeys(TrialState, 0) for name in stores.studies.names()}
        for name, state, n in stores.trials.count_by_study_and_state():
            by_study.setdefault(name, dict.fromkeys(TrialState, 0))[state] = n
        active, expired = stores.trials.count_leases(now)
        workers = dict.fromkeys(WORKER_STATES, 0)
        for worker in stores.workers.all():
            stale = is_stale(worker.state, worker.last_seen_at, now, stale_after)
            workers["stale" if stale else worker.state.value] += 1
    trials = dict.fromkeys(TrialState, 0)
    for per_state in by_study.values():
        for state, n in per_state.items():
            trials[state] += n
    return Counts(studies, trials, by_study, active, expired, workers)
