"""Step 1 of bench/hpo_efficiency.py: the table. Every configuration of a finite grid over lr,
batch_size, dropout, weight_decay and norm, trained once for the full budget with the real
trainer (one torch thread, seed 0), its per-epoch validation accuracy stored in a JSON file that
later runs reuse while the grid, workload, budget and seed are the same."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

from reporting import machine  # bench/reporting.py

from hpo.protocol import Decision
from trainer.train import TrainConfig, TrainingError, train

EPOCHS = 20
TRAIN_SEED = 0
# The grid, in spec order: 4 x 2 x 2 x 2 x 3 = 96 configurations.
GRID: dict[str, list[Any]] = {
    "lr": [0.001, 0.003, 0.01, 0.03],
    "batch_size": [32, 128],
    "dropout": [0.0, 0.3],
    "weight_decay": [0.0001, 0.1],
    "norm": ["none", "batch", "layer"],
}
# Fixed for every trial: MNIST-1D's default 5000 samples (3200 train, 800 validation).
WORKLOAD: dict[str, Any] = {"model": "cnn", "dataset": "mnist1d", "n_samples": 5000, "channels": 32}


# -- step 1: the table ----------------------------------------------------------------------


def grid_configs() -> list[dict[str, Any]]:
    """Every combination of GRID, the last parameter varying fastest."""
    return [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]


def table_meta() -> dict[str, Any]:
    """What a table was built from; a stored table is reused only when this matches."""
    return {"grid": GRID, "workload": WORKLOAD, "epochs": EPOCHS, "seed": TRAIN_SEED}


def train_config(params: dict[str, Any]) -> dict[str, Any]:
    """Trains one configuration for EPOCHS epochs: its params, per-epoch val_accuracy and
    epoch_seconds, and the error that ended it early (a NaN loss), else None."""
    curve: list[float] = []
    seconds: list[float] = []

    def report(_epoch: int, metrics: dict[str, float]) -> Decision:
        curve.append(metrics["val_accuracy"])
        seconds.append(metrics["epoch_seconds"])
        return Decision.CONTINUE

    fixed = {k: v for k, v in WORKLOAD.items() if k not in ("model", "dataset")}
    config = TrainConfig(
        model=WORKLOAD["model"],
        dataset=WORKLOAD["dataset"],
        epochs=EPOCHS,
        params={**fixed, **params},
        seed=TRAIN_SEED,
    )
    error = None
    try:
        train(config, report)
    except TrainingError as exc:
        error = str(exc)
    return {"params": params, "val_accuracy": curve, "epoch_seconds": seconds, "error": error}


def load_table(path: Path) -> dict[str, Any] | None:
    """The stored table when it was built from the current grid and workload, else None."""
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return table if table.get("meta", {}).get("source") == table_meta() else None


def save_json(path: Path, document: dict[str, Any]) -> None:
    """Writes atomically, so an interrupted build leaves the previous state readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    partial.replace(path)


def build_table(path: Path, rebuild: bool) -> dict[str, Any]:
    """Trains every grid configuration not in the stored table yet (all of them with
    `rebuild`), saving after each one so that an interrupted build goes on where it stopped."""
    table = None if rebuild else load_table(path)
    if table is None:
        table = {"meta": {"source": table_meta(), "build_seconds": 0.0}, "configs": []}
    configs = grid_configs()
    for params in configs[len(table["configs"]) :]:
        started = time.perf_counter()
        entry = train_config(params)
        table["meta"]["build_seconds"] += time.perf_counter() - started
        table["configs"].append(entry)
        final = entry["val_accuracy"][-1] if entry["val_accuracy"] else float("nan")
        print(f"[{len(table['configs'])}/{len(configs)}] {params} -> {final:.4f}", flush=True)
        table["meta"]["machine"] = machine("torch").as_dict()
        save_json(path, table)
    return table


def final_accuracy(entry: dict[str, Any]) -> float | None:
    """The configuration's val_accuracy after the full budget, None when it failed early."""
    curve = entry["val_accuracy"]
    return curve[-1] if len(curve) == EPOCHS else None


def config_key(params: dict[str, Any]) -> tuple[int, ...]:
    """The position of each value in its GRID list: a proposal's row in the table."""
    key = []
    for name, values in GRID.items():
        value = params[name]
        matches = [
            i
            for i, v in enumerate(values)
            if v == value or (isinstance(v, float) and math.isclose(v, value, rel_tol=1e-9))
        ]
        if not matches:
            raise ValueError(f"{name}={value!r} is not a grid value; the table cannot answer it")
        key.append(matches[0])
    return tuple(key)
