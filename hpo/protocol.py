"""What the server and the worker must agree on: states, decisions and the shapes they exchange.

These are the contract values of DESIGN.md; the wire format is the enum's string value. Both
`service` and `trainer` import this module, so it stays torch-free and imports neither of them.
"""

from __future__ import annotations

from enum import Enum


class StudyState(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in (StudyState.COMPLETED, StudyState.FAILED)

    def hands_out_work(self) -> bool:
        """Only a running study gives new or re-leased trials to workers."""
        return self is StudyState.RUNNING


class TrialState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in FINISHED_TRIAL_STATES


FINISHED_TRIAL_STATES = frozenset({TrialState.COMPLETED, TrialState.PRUNED, TrialState.FAILED})


class WorkerState(str, Enum):
    """What the server stores about a worker. `active` covers a worker that stopped sending
    heartbeats too: "stale" is not stored but read off `last_seen_at`."""

    ACTIVE = "active"
    GONE = "gone"


class Decision(str, Enum):
    """What a worker must do after reporting an epoch.

    - continue: train the next epoch.
    - prune: the search gave up on this trial; it is already recorded `pruned`.
    - pause: save a checkpoint if possible and stop; the trial is already `paused` and may be
      resumed later by any worker.
    - stop: the trial is no longer this worker's (re-leased, deleted); drop it without a word.
    """

    CONTINUE = "continue"
    PRUNE = "prune"
    PAUSE = "pause"
    STOP = "stop"

    def ends_training(self) -> bool:
        return self is not Decision.CONTINUE
