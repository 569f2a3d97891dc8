"""The one place where domain objects become API responses."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from service.api import schemas
from service.api.trial_models import model_url
from service.domain.leasing import LeasedTrial
from service.domain.reporting import report_interval
from service.domain.studies import StudyView, TrialDetailView, TrialPageView
from service.domain.workers import is_stale
from service.storage.models import TrialRow, WorkerRow


def finite(value: Any) -> Any:
    """The value with every NaN / infinity replaced by None, recursively (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def study(view: StudyView) -> schemas.StudyPublic:
    row, best = view.row, view.best
    return schemas.StudyPublic(
        id=row.id,
        name=row.name,
        state=row.state,
        reason=row.reason or view.waiting,
        spec=finite(row.spec),
        counts={state.value: n for state, n in view.counts.items()},
        best=[_best(t) for t in view.front]
        if view.front is not None
        else None
        if best is None
        else schemas.BestTrial(
            trial_id=best.id,
            number=best.number,
            value=finite(best.value),
            model_url=_model_url(best),
            params=finite(best.params or {}),
            test_metrics=finite(best.test_metrics),
        ),
        max_trials=row.max_trials,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _best(row: TrialRow) -> schemas.BestTrial:
    """A trial of a multi-objective study's Pareto set."""
    return schemas.BestTrial(
        trial_id=row.id,
        number=row.number,
        value=None,
        values=finite(row.values),
        model_url=_model_url(row),
        params=finite(row.params or {}),
        test_metrics=finite(row.test_metrics),
    )


def _model_url(row: TrialRow) -> str | None:
    return model_url(row.id) if row.model_id is not None else None


def _trial_fields(row: TrialRow, workers: dict[int, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "study_id": row.study_id,
        "number": row.number,
        "state": row.state,
        "params": finite(row.params or {}),
        "value": finite(row.value),
        "values": finite(row.values),
        "epochs": row.epochs,
        "worker": workers.get(row.worker_id) if row.worker_id is not None else None,
        "attempt": row.attempt,
        "reason": row.reason,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "bracket": row.bracket,
        "rung": row.rung,
        "checkpoint_epoch": row.checkpoint_epoch if row.checkpoint_id else 0,
        "model_url": _model_url(row),
    }


def trial(row: TrialRow, workers: dict[int, str]) -> schemas.TrialPublic:
    return schemas.TrialPublic(**_trial_fields(row, workers))


def completed_trial(row: TrialRow, assignments: list[schemas.Assignment]) -> schemas.CompletedTrial:
    """A completion's answer: the trial as `trial` shows it, and the next trials leased with
    it (built and checked once, not as a TrialPublic first)."""
    return schemas.CompletedTrial(**_trial_fields(row, {}), assignments=assignments)


def trial_page(page: TrialPageView) -> schemas.TrialPage:
    return schemas.TrialPage(items=[trial(r, page.workers) for r in page.items], next=page.next)


def trial_detail(detail: TrialDetailView) -> schemas.TrialDetail:
    curve = [schemas.CurvePoint(epoch=m.epoch, metrics=finite(m.metrics)) for m in detail.curve]
    return schemas.TrialDetail(
        **_trial_fields(detail.row, detail.workers),
        curve=curve,
        test_metrics=finite(detail.row.test_metrics),
    )


def worker(
    row: WorkerRow, trials: list[TrialRow], now: datetime, stale_after: float
) -> schemas.WorkerPublic:
    age = max(0.0, (now - row.last_seen_at).total_seconds())
    return schemas.WorkerPublic(
        id=row.id,
        name=row.name,
        host=row.host,
        device=row.device,
        state=row.state.value,
        last_seen_at=row.last_seen_at,
        heartbeat_age_s=round(age, 3),
        stale=is_stale(row.state, row.last_seen_at, now, timedelta(seconds=stale_after)),
        trials=[
            schemas.WorkerTrial(trial_id=t.id, study_id=t.study_id, number=t.number, epoch=t.epochs)
            for t in trials
        ],
        fuse=int((row.capabilities or {}).get("fuse", 1)),
        slot=int((row.capabilities or {}).get("slot", 0)),
        slots=int((row.capabilities or {}).get("slots", 1)),
    )


def assignment(a: LeasedTrial, report_seconds: float) -> schemas.Assignment:
    """The wire shape of a leased trial; `report_seconds`: the server's report interval."""
    t = a.trial
    assert t.lease_token is not None and t.lease_expires_at is not None
    return schemas.Assignment(
        trial_id=t.id,
        token=t.lease_token,
        study_id=a.study.id,
        study_name=a.study.name,
        number=t.number,
        attempt=t.attempt,
        params=a.spec.trainer_params(t.params or {}),
        workload=a.spec.workload.model_dump(mode="json"),
        objective=a.spec.objective.model_dump(mode="json"),
        epochs=a.spec.budget.epochs,
        target_epochs=a.target_epochs,
        start_epoch=a.start_epoch,
        checkpoint_id=t.checkpoint_id if a.start_epoch else None,
        rung=t.rung,
        expires_at=t.lease_expires_at,
        keep_model=a.spec.keep_models > 0,
        report_interval=report_interval(a.spec, report_seconds),
    )
