"""End to end: real `hpo server` and `hpo worker` processes with fewer requests per trial. A
study without a pruner has its reports held and sent together (the lease's report_interval)
and each trial's last epoch sent with its completion, yet its curves are complete and equal to
those of a server that has every report sent at once; a study with a pruner still prunes, each
report answered at once."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import Processes, spec_doc, wait_for
from tests.support import api

pytestmark = pytest.mark.e2e

EPOCHS = 6
# Epochs of tens of milliseconds; no checkpoint but the pauses' (this test is about reports).
WORKLOAD = {"model": "mlp", "dataset": "digits", "checkpoint_every": 100}
DETERMINISTIC = ("train_loss", "val_loss", "val_accuracy", "lr")
REPORT_ROUTES = (
    "/api/v1/workers/{worker_id}/trials/{trial_id}/report",
    "/api/v1/workers/{worker_id}/reports",
)


def _run(url: str, doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create the study, wait for it to finish: the study and its trials with their curves."""
    study_id = api.create_study(url, doc)["id"]
    study = api.finished(url, study_id, 240)
    items = api.get(url, f"/api/v1/studies/{study_id}/trials?limit=100")["items"]
    trials = [api.get(url, f"/api/v1/trials/{t['id']}") for t in items]
    return study, sorted(trials, key=lambda t: t["number"])


def _requests(url: str, routes: tuple[str, ...]) -> int:
    """POST requests answered 200 on `routes`, from the server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=30).text
    total = 0.0
    for route in routes:
        pattern = (
            r'hpo_http_requests_total\{method="POST",route="' + re.escape(route) + r'",'
            r'status="200"\} ([0-9.e+]+)'
        )
        total += sum(float(m) for m in re.findall(pattern, text))
    return int(total)


def _curves(trials: list[dict[str, Any]]) -> list[list[tuple[int, dict[str, float]]]]:
    return [
        [(p["epoch"], {k: p["metrics"][k] for k in DETERMINISTIC}) for p in t["curve"]]
        for t in trials
    ]


def _sent_alone(trials: list[dict[str, Any]]) -> int:
    """Report requests when each report is sent at once: every epoch's, but the last epoch of
    a trial that trained its full budget, which travels with the completion."""
    return sum(t["epochs"] - (t["epochs"] == EPOCHS) for t in trials)


def test_held_reports_give_the_same_complete_curves_as_every_report_sent(
    processes: Processes,
) -> None:
    every = processes.server("every", HPO_REPORT_INTERVAL_SECONDS="0")
    held = processes.server(
        "held",
        HPO_REPORT_INTERVAL_SECONDS="60",
        HPO_DATABASE_URL=f"sqlite:///{processes.tmp_path / 'held.db'}",
        HPO_ARTIFACTS_DIR=str(processes.tmp_path / "held-artifacts"),
    )
    processes.worker("w-every", every)
    processes.worker("w-held", held)
    doc = spec_doc(
        "no-pruner",
        strategy={"kind": "random", "seed": 3},
        budget={"max_trials": 3, "parallel_trials": 1, "epochs": EPOCHS},
        workload=WORKLOAD,
        keep_models=0,  # else each last report is answered before the model's upload
    )
    study_every, trials_every = _run(every, doc)
    study_held, trials_held = _run(held, doc)
    for study, trials in ((study_every, trials_every), (study_held, trials_held)):
        assert study["state"] == "completed" and study["counts"]["completed"] == 3
        for trial in trials:
            assert [p["epoch"] for p in trial["curve"]] == list(range(1, EPOCHS + 1))
            assert trial["value"] == trial["curve"][-1]["metrics"]["val_accuracy"]
    assert [t["params"] for t in trials_held] == [t["params"] for t in trials_every]
    assert _curves(trials_held) == _curves(trials_every)
    assert [t["value"] for t in trials_held] == [t["value"] for t in trials_every]
    # Every report sent at once: 5 report requests a trial; held for 60 s: none at all, each
    # trial's 6 epochs travel with its completion.
    assert _requests(every, REPORT_ROUTES) == _sent_alone(trials_every) == 3 * (EPOCHS - 1)
    assert _requests(held, REPORT_ROUTES) == 0
    complete = ("/api/v1/workers/{worker_id}/trials/{trial_id}/complete",)
    assert _requests(every, complete) == _requests(held, complete) == 3


def test_a_study_with_a_pruner_still_prunes_with_each_report_answered(
    processes: Processes,
) -> None:
    url = processes.server(HPO_REPORT_INTERVAL_SECONDS="60")
    processes.worker("w", url)
    doc = spec_doc(
        "median",
        strategy={"kind": "random", "seed": 0, "early_stopping": "median"},
        budget={"max_trials": 8, "parallel_trials": 1, "epochs": EPOCHS},
        space={"lr": {"type": "float", "low": 1e-5, "high": 0.5, "log": True}},
        workload=WORKLOAD,
        keep_models=0,
    )
    study, trials = _run(url, doc)
    assert study["state"] == "completed"
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, [(t["state"], t["epochs"]) for t in trials]
    for trial in pruned:
        assert trial["reason"] == f"pruned at epoch {trial['epochs']}"
        assert [p["epoch"] for p in trial["curve"]] == list(range(1, trial["epochs"] + 1))
    # The lease said report_interval 0 (a pruner reads every report): none was held.
    assert _requests(url, REPORT_ROUTES) == _sent_alone(trials)
    wait_for(lambda: "pruned after" in processes.log("w"), 30, "the worker's pruned line")
