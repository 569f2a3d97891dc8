"""A multi-objective study's page in headless Chromium against a real `hpo server`: the Pareto
front is drawn (every completed trial a point of its two objectives, the front's trials marked
and joined), the header lists the front, and the trials table marks the front's rows. The trials
are completed over HTTP by a hand-written worker, so the front is known."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, spec_doc
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e

# (val_accuracy, train_seconds) of trials 0..4: 1 is beaten by 0 (as accurate, slower) and 3 by
# 2 (less accurate, slower); 0, 2 and 4 are the front.
RESULTS = [(0.75, 10.0), (0.75, 20.0), (0.875, 30.0), (0.5, 40.0), (0.9375, 50.0)]
FRONT = ["0", "2", "4"]


def _study(http: httpx.Client) -> int:
    budget = {"max_trials": len(RESULTS), "parallel_trials": len(RESULTS), "epochs": 1}
    doc = spec_doc("pareto-page", budget=budget)
    del doc["objective"]
    doc["objectives"] = [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "train_seconds", "direction": "minimize"},
    ]
    study = http.post("/api/v1/studies", json=doc).json()
    worker = ApiWorker(http, "pareto-worker")
    for trial, (accuracy, seconds) in zip(worker.lease(len(RESULTS)), RESULTS, strict=True):
        metrics = {"val_accuracy": accuracy, "train_seconds": seconds}
        assert worker.report(trial, 1, **metrics).status_code == 200
        assert worker.post(trial, "complete").status_code == 200
    return int(study["id"])


def test_the_front_is_drawn_and_its_trials_marked(processes: Processes, web: Page) -> None:
    url = processes.server()
    with httpx.Client(base_url=url, timeout=30) as http:
        study = _study(http)
        assert [b["number"] for b in http.get(f"/api/v1/studies/{study}").json()["best"]] == [
            0,
            2,
            4,
        ]
    page = web.page
    page.goto(f"{url}/#/studies/{study}")

    # The header names both objectives and lists the front, a link per trial.
    expect(page.locator(".study-head")).to_contain_text(
        "maximize val_accuracy, minimize train_seconds"
    )
    chips = page.locator("#best-front [data-front]")
    expect(chips).to_have_count(3)
    assert [chips.nth(i).get_attribute("data-front") for i in range(3)] == FRONT
    expect(chips.nth(1)).to_have_text("#20.875 · 30")

    # The chart: five points, the three of the front marked, and one line through them.
    panel = page.locator("#panel-front")
    expect(panel).to_be_visible()
    expect(panel.locator("circle.dot")).to_have_count(5)
    marked = panel.locator("circle.front")
    expect(marked).to_have_count(3)
    assert sorted(marked.nth(i).get_attribute("data-number") for i in range(3)) == FRONT
    line = panel.locator("path.front-line").get_attribute("d") or ""
    assert line.startswith("M") and line.count("L") == 2  # three points joined
    expect(panel).to_contain_text("3 trials on the front of 5 completed trials")
    expect(panel).to_contain_text("val_accuracy (higher is better)")
    expect(panel).to_contain_text("train_seconds (lower is better)")
    # One value per trial means nothing here: the single-objective charts are hidden.
    expect(page.locator("#panel-history")).to_be_hidden()
    web.shoot("pareto-front")

    # The table: a column per objective and the front's rows marked.
    table = page.locator("#trials")
    expect(table.locator("thead")).to_contain_text("val_accuracy")
    expect(table.locator("thead")).to_contain_text("train_seconds")
    rows = table.locator("tbody tr[data-front='true']")
    expect(rows).to_have_count(3)
    assert sorted(rows.nth(i).get_attribute("data-number") for i in range(3)) == FRONT
    expect(table.locator("tbody tr[data-number='3']")).not_to_contain_text("front")
    expect(table.locator("tbody tr[data-number='2']")).to_contain_text("front")

    # Clicking a front point opens its trial, whose dialog shows its values.
    first = marked.first.get_attribute("data-number")
    marked.first.click()
    expect(page).to_have_url(f"{url}/#/studies/{study}/trials/{first}")
    accuracy, seconds = RESULTS[int(first or 0)]
    values = page.locator("#trial-dialog dd[data-fact='Values']")
    expect(values).to_have_text(f"{accuracy:g} · {seconds:g}")
    assert web.axe() == []
