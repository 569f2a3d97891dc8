"""A large study for the web page's benchmark and tests: the study created through the service,
then trials, metrics and events bulk-inserted straight into its SQLite file (about 100,000 rows a
second), since the page reads the `hpo_*` tables only.

Trials: 88 % completed with every epoch, 9 % pruned after 3 to 15 epochs, 2 % failed, 1 %
running; five metrics per epoch like the trainer's (a few NaN losses); the seeded accuracy depends
on lr most, then norm and dropout.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert

from service.app import build_services
from service.settings import Settings
from service.storage.models import EventRow, MetricRow, StudyRow, TrialRow, WorkerRow

SPEC: dict[str, Any] = {
    "name": "large-study",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "strategy": {"kind": "tpe", "seed": 0, "early_stopping": "median"},
    "budget": {"max_trials": 10_000, "parallel_trials": 8, "epochs": 20},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128, 256]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "norm": {"type": "categorical", "choices": ["none", "batch", "layer", "group", "instance"]},
    },
    "workload": {"model": "mlp", "dataset": "synthetic"},
}
CHUNK = 20_000
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _params(rng: random.Random) -> dict[str, Any]:
    return {
        "lr": math.exp(rng.uniform(math.log(1e-4), math.log(0.3))),
        "batch_size": rng.choice([32, 64, 128, 256]),
        "dropout": rng.uniform(0.0, 0.5),
        "weight_decay": math.exp(rng.uniform(math.log(1e-6), math.log(1e-2))),
        "norm": rng.choice(["none", "batch", "layer", "group", "instance"]),
    }


def _quality(params: dict[str, Any]) -> float:
    """A plausible final accuracy: best near lr 0.01, some norm and dropout effect."""
    lr_term = -0.08 * (math.log10(params["lr"]) + 2.0) ** 2
    norm_term = {"none": 0.0, "batch": 0.04, "layer": 0.03, "group": 0.02, "instance": 0.01}
    return 0.9 + lr_term + norm_term[params["norm"]] - 0.1 * params["dropout"]


def _metrics(rng: random.Random, final: float, epoch: int, epochs: int) -> dict[str, float]:
    progress = 1.0 - math.exp(-4.0 * epoch / epochs)
    acc = max(0.0, min(1.0, 0.1 + (final - 0.1) * progress + rng.gauss(0, 0.01)))
    loss = (1.0 - acc) * 2.0 + rng.gauss(0, 0.02)
    return {
        "val_accuracy": acc,
        "val_loss": loss if rng.random() > 0.0005 else math.nan,
        "train_loss": loss * 0.9,
        "lr": 0.01 * (0.5 + 0.5 * math.cos(math.pi * epoch / epochs)),
        "epoch_seconds": 0.5 + rng.random() * 0.1,
    }


def _trial_plan(rng: random.Random, number: int, epochs: int) -> tuple[str, int]:
    """(state, epochs reported) of trial `number`."""
    roll = rng.random()
    if roll < 0.88:
        return "completed", epochs
    if roll < 0.97:
        return "pruned", rng.randint(3, min(15, epochs))
    if roll < 0.99:
        return "failed", rng.randint(1, epochs)
    return "running", rng.randint(1, epochs - 1)


def seed(settings: Settings, trials: int = 10_000, epochs: int = 20, events: bool = True) -> int:
    """Create the study in the fresh SQLite database of `settings` and bulk-insert `trials`
    trials with their metrics (and their events when `events`); returns the study id."""
    services = build_services(settings)
    spec = {**SPEC, "budget": {**SPEC["budget"], "max_trials": trials, "epochs": epochs}}
    study_id = services.studies.create(spec).row.id
    rng = random.Random(0)
    rows: dict[Any, list[dict[str, Any]]] = {TrialRow: [], MetricRow: [], EventRow: []}
    with services.db.write() as session:
        workers = [
            session.execute(
                insert(WorkerRow).values(name=f"gpu{i}", host="box", device=f"cuda:{i}")
            ).inserted_primary_key[0]
            for i in range(8)
        ]
    for number in range(trials):
        worker_id = workers[number % len(workers)]
        _one_trial(rows, rng, study_id, number, epochs, worker_id, events)
    with services.db.write() as session:
        session.get(StudyRow, study_id).n_trials = trials  # type: ignore[union-attr]
        for model, table_rows in rows.items():
            _bulk_insert(session.connection(), model.__table__, table_rows)
    services.db.dispose()
    return study_id


def _one_trial(
    rows: dict[Any, list[dict[str, Any]]],
    rng: random.Random,
    study_id: int,
    number: int,
    epochs: int,
    worker_id: int,
    events: bool,
) -> None:
    """Append trial `number`'s row, metric rows and events to `rows` (ids: number + 1)."""
    state, n_epochs = _trial_plan(rng, number, epochs)
    params = _params(rng)
    final = _quality(params)
    began = START + timedelta(seconds=number * 3)
    curve = [_metrics(rng, final, e, epochs) for e in range(1, n_epochs + 1)]
    value = None if state == "failed" else curve[-1]["val_accuracy"]
    trial_id = number + 1
    rows[TrialRow].append(
        {
            "id": trial_id,
            "study_id": study_id,
            "number": number,
            "state": state,
            "params": params,
            "value": value,
            "epochs": n_epochs,
            "attempt": 1,
            "worker_id": worker_id,
            "started_at": began,
            "finished_at": None if state == "running" else began + timedelta(seconds=n_epochs),
            "reason": "loss is NaN" if state == "failed" else None,
        }
    )
    event = {"study_id": study_id, "trial_id": trial_id}
    for epoch, metrics in enumerate(curve, start=1):
        at = began + timedelta(seconds=epoch)
        text = json.dumps(metrics, separators=(",", ":"))  # once for the row and the event
        rows[MetricRow].append(
            {"trial_id": trial_id, "epoch": epoch, "metrics": text, "reported_at": at}
        )
        if events:
            payload = f'{{"number":{number},"epoch":{epoch},"metrics":{text}}}'
            rows[EventRow].append(
                {**event, "kind": "trial_reported", "payload": payload, "created_at": at}
            )
    if events and state != "running":
        payload = json.dumps({"number": number, "state": state, "value": value, "reason": None})
        rows[EventRow].append(
            {**event, "kind": "trial_finished", "payload": payload, "created_at": began}
        )


def _bulk_insert(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT through the driver's executemany, with values pre-serialized the way the models'
    column types store them (JSON text, naive UTC timestamps): ten times faster than the ORM."""
    if not rows:
        return
    names = list(rows[0])
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    for i in range(0, len(rows), CHUNK):
        chunk = [tuple(_stored(row[name]) for name in names) for row in rows[i : i + CHUNK]]
        connection.exec_driver_sql(sql, chunk)


def _stored(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value
