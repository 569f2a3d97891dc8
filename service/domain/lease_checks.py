"""What every write by a lease holder checks: that its token still holds the trial; and what a
holder is told about a trial that no longer runs. Shared by the parts of the worker protocol.

The row locks taken before such a write are the stores' (`TrialStore.lock_for_report`), in the
one lock order `service.storage.locks` writes down.
"""

from __future__ import annotations

import secrets

from hpo.protocol import Decision, TrialState
from service.domain.errors import NotFound, StaleLease
from service.storage.models import StudyRow, TrialRow


def held(found: TrialRow | None, trial_id: int, token: str) -> TrialRow:
    """The trial, if `token` holds it. Raises NotFound (no such trial) or StaleLease."""
    if found is None:
        raise _missing(trial_id)
    if not holds(found, token):
        raise StaleLease(
            f"lease token of trial {trial_id} is stale: the trial was handed to another "
            "worker or ended"
        )
    return found


def held_with_study(
    found: tuple[StudyRow, TrialRow] | None, trial_id: int, token: str
) -> tuple[StudyRow, TrialRow]:
    """`held` for the (study, trial) pair a store locked, or None for a missing trial."""
    if found is None:
        raise _missing(trial_id)
    study, trial = found
    return study, held(trial, trial_id, token)


def _missing(trial_id: int) -> NotFound:
    return NotFound(f"trial {trial_id} not found (its study may have been deleted)")


def holds(trial: TrialRow, token: str) -> bool:
    """Whether `token` is the trial's current lease token, compared in constant time."""
    current = trial.lease_token
    # As bytes: compare_digest raises TypeError for str with non-ASCII characters.
    return current is not None and secrets.compare_digest(current.encode(), token.encode())


def require_running(trial: TrialRow) -> None:
    if trial.state is not TrialState.RUNNING:
        raise StaleLease(f"trial {trial.id} is {trial.state.value}, not running")


def decision_for_finished(trial: TrialRow) -> Decision:
    if trial.state is TrialState.PRUNED:
        return Decision.PRUNE
    if trial.state is TrialState.PAUSED:
        return Decision.PAUSE
    return Decision.STOP
