"""The one rule for a stale worker, and what a worker can run: used alike by the workers list,
/metrics and a study's waiting reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hpo.protocol import WorkerState
from service.domain.spec import StudySpec
from service.domain.workers import can_run, is_stale
from tests.conftest import spec_doc

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
AFTER = timedelta(seconds=60)


@pytest.mark.parametrize(
    ("state", "silent_s", "stale"),
    [
        (WorkerState.ACTIVE, 0, False),
        (WorkerState.ACTIVE, 60, False),  # exactly the limit: not yet
        (WorkerState.ACTIVE, 61, True),
        (WorkerState.GONE, 3600, False),  # gone is gone, not stale
    ],
)
def test_a_worker_is_stale_when_active_and_silent_past_the_limit(
    state: WorkerState, silent_s: int, stale: bool
) -> None:
    assert is_stale(state, NOW - timedelta(seconds=silent_s), NOW, AFTER) is stale


def test_built_ins_run_anywhere_and_plugins_only_where_registered() -> None:
    builtin = StudySpec.model_validate(spec_doc())
    plugin = StudySpec.model_validate(
        spec_doc(workload={"model": "mine", "dataset": "synthetic"}),
        context={"models": {"mine"}, "datasets": set()},
    )
    assert can_run({}, builtin) and can_run(None, builtin)
    assert not can_run({}, plugin)
    assert can_run({"models": ["mine"]}, plugin)
