"""End to end (issue 13 item 3): real `hpo server` and `hpo worker` processes run a small digits
study; its best trial carries a held-out test score that this test recomputes from the trial's
params on the test split, which no trial was trained or selected on, and `hpo submit --wait`
ends with it. A fused worker sends each member's own score."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import torch.nn.functional as F
import yaml

import hpo
from tests.conftest import Processes, hpo_command, spec_doc, wait_for
from trainer.train import TrainConfig, build_run, evaluate, train_epoch

pytestmark = pytest.mark.e2e

EPOCHS = 3
WORKLOAD = {"model": "mlp", "dataset": "digits", "norm": "batch", "batch_size": 64}


def _doc(name: str, trials: int) -> dict[str, Any]:
    return spec_doc(
        name,
        budget={"max_trials": trials, "parallel_trials": trials, "epochs": EPOCHS},
        space={"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
        workload=WORKLOAD,
    )


def _recomputed(params: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """The trial trained again here from its params, as the worker trained it (one torch
    thread): its last validation accuracy, and its test loss and accuracy computed in one batch
    on the trainer's test split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig.from_assignment(WORKLOAD, params, EPOCHS, "cpu")
        run = build_run(config)
        for epoch in range(1, EPOCHS + 1):
            train_epoch(run, epoch)
        _, val_accuracy = evaluate(run.model, run.data.x_val, run.data.y_val)
        run.model.eval()
        with torch.no_grad():
            logits = run.model(run.data.x_test).double()
    finally:
        torch.set_num_threads(threads)
    y = run.data.y_test
    test = {
        "test_accuracy": (logits.argmax(dim=1) == y).double().mean().item(),
        "test_loss": F.cross_entropy(logits, y).item(),
    }
    return val_accuracy, test


@pytest.mark.timeout(600)
def test_the_best_trial_carries_a_recomputable_held_out_score(
    processes: Processes, tmp_path: Path
) -> None:
    url = processes.server()
    processes.worker("w", url)
    spec = tmp_path / "held-out.yaml"
    spec.write_text(yaml.safe_dump(_doc("held-out", 3)))
    submitted = subprocess.run(
        hpo_command("submit", str(spec), "--server", url, "--wait"),
        capture_output=True,
        text=True,
        timeout=540,
        env=processes.env,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    study = httpx.get(f"{url}/api/v1/studies/1", timeout=30).json()
    assert study["state"] == "completed" and study["counts"]["completed"] == 3
    best = study["best"]
    held_out = best["test_metrics"]
    assert set(held_out) == {"test_accuracy", "test_loss"}
    detail = httpx.get(f"{url}/api/v1/trials/{best['trial_id']}", timeout=30).json()
    assert detail["test_metrics"] == held_out
    last_epoch = detail["curve"][-1]["metrics"]
    assert all("test_accuracy" not in point["metrics"] for point in detail["curve"])

    val_accuracy, test = _recomputed(best["params"])
    assert val_accuracy == pytest.approx(last_epoch["val_accuracy"], abs=1e-12)  # same model
    assert held_out["test_accuracy"] == pytest.approx(test["test_accuracy"], abs=1e-12)
    assert held_out["test_loss"] == pytest.approx(test["test_loss"], rel=1e-5)

    # The Python client: Study.best and the dataframe's columns.
    client = hpo.Client(url)
    try:
        mine = client.study(1)
        assert mine.best is not None and mine.best.test_metrics == held_out
        frame = mine.dataframe()
        row = frame.loc[best["number"]]
        assert row["metrics_test_accuracy"] == held_out["test_accuracy"]
        assert row["metrics_test_loss"] == held_out["test_loss"]
    finally:
        client.close()

    # The worker's line for the trial says its score too, labelled as everywhere else.
    line = (
        rf"trial #{best['number']} of 'held-out' completed in [0-9.]+ s: "
        rf"val_accuracy=\S+ at epoch {EPOCHS}; held-out "
        rf"test_accuracy={held_out['test_accuracy']:.4g} \(never used for selection\)"
    )
    assert re.search(line, processes.log("w")), processes.log("w")

    last_line = submitted.stdout.strip().splitlines()[-1]
    assert last_line == (
        f"held-out test of trial #{best['number']}: "
        f"test_accuracy={held_out['test_accuracy']:.4g} test_loss={held_out['test_loss']:.4g} "
        "(never used for selection)"
    )


@pytest.mark.timeout(600)
def test_a_fused_worker_sends_each_members_own_score(processes: Processes) -> None:
    url = processes.server()
    http = httpx.Client(base_url=url, timeout=30)
    reply = http.post("/api/v1/studies", json=_doc("held-out-fused", 2))
    assert reply.status_code == 201, reply.text
    study_id = reply.json()["id"]
    processes.worker("fused", url, "--fuse", "2")

    def finished() -> bool:
        return http.get(f"/api/v1/studies/{study_id}").json()["state"] != "running"

    wait_for(finished, 400, "the fused study to finish", every=0.5)
    assert "in a group of 2" in processes.log("fused")
    trials = http.get(f"/api/v1/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in trials] == ["completed", "completed"]
    scores = []
    for trial in trials:
        held_out = http.get(f"/api/v1/trials/{trial['id']}").json()["test_metrics"]
        _, test = _recomputed(trial["params"])
        # A fused member computes its sums in another order: float32 rounding apart.
        assert held_out["test_loss"] == pytest.approx(test["test_loss"], rel=1e-3)
        assert held_out["test_accuracy"] == pytest.approx(test["test_accuracy"], abs=0.02)
        scores.append(held_out)
    assert scores[0] != scores[1]  # each member's own weights
