"""The page shows a study's held-out test score in headless Chromium against a real `hpo
server` (issue 13 item 3): the best panel and the trial dialog label it as the held-out test,
never used for selection, or say in words why there is none; a trial without one shows none.
The trials are completed over HTTP by a hand-written worker, so the numbers are known."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, spec_doc
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e

LABEL = "held-out test, never used for selection"


def _study(http: httpx.Client, name: str, runs: list[tuple[list[float], Any]]) -> int:
    """A study whose trials report `values` and complete with `test_metrics` (None: none)."""
    budget = {"max_trials": len(runs), "parallel_trials": len(runs), "epochs": 2}
    study = http.post("/api/v1/studies", json=spec_doc(name, budget=budget)).json()
    worker = ApiWorker(http, f"{name}-worker")
    for trial, (values, test_metrics) in zip(worker.lease(len(runs)), runs, strict=True):
        for epoch, value in enumerate(values, start=1):
            assert worker.report(trial, epoch, val_accuracy=value).status_code == 200
        extra = {} if test_metrics is None else {"test_metrics": test_metrics}
        assert worker.post(trial, "complete", **extra).status_code == 200
    return int(study["id"])


def test_the_best_panel_and_the_trial_dialog_show_the_held_out_score(
    processes: Processes, web: Page
) -> None:
    url = processes.server()
    with httpx.Client(base_url=url, timeout=30) as http:
        scored = _study(
            http,
            "scored",
            [
                ([0.5, 0.875], {"test_accuracy": 0.8125, "test_loss": 0.4375}),
                ([0.5, 0.625], {"test_accuracy": 0.96875, "test_loss": 0.125}),
            ],
        )
        no_split = _study(
            http, "no-split", [([0.5, 0.75], {"unavailable": "the dataset has no test split"})]
        )
        older = _study(http, "older-worker", [([0.5, 0.75], None)])
    page = web.page

    page.goto(f"{url}/#/studies/{scored}")
    expect(page.locator("#best-value")).to_have_text("0.875")  # validation chose trial #0
    held_out = page.locator("#best-held-out")
    expect(held_out).to_contain_text(LABEL)
    expect(held_out.locator("[data-held-out]")).to_have_text(
        "test_accuracy 0.8125 · test_loss 0.4375"
    )
    web.shoot("held-out-best")
    page.locator("#best-value").click()
    dialog = page.locator("#trial-dialog")
    expect(dialog.locator("dd[data-fact='Test score']")).to_contain_text(LABEL)
    expect(dialog.locator("#trial-held-out [data-held-out]")).to_have_text(
        "test_accuracy 0.8125 · test_loss 0.4375"
    )
    web.shoot("held-out-trial")
    # The trials table offers no column to sort by it.
    expect(page.locator("#trials thead")).not_to_contain_text("test")

    page.goto(f"{url}/#/studies/{no_split}")
    expect(page.locator("#best-held-out")).to_contain_text(LABEL)
    expect(page.locator("#best-held-out [data-held-out]")).to_have_text(
        "no score: the dataset has no test split"
    )

    page.goto(f"{url}/#/studies/{older}")
    expect(page.locator("#best-value")).to_have_text("0.75")
    expect(page.locator("#best-held-out")).to_have_count(0)
