"""The page offers a kept model for download, in headless Chromium against a real `hpo
server` (issue 16 item 3): the best panel and the trial dialog link the file and the link
fetches it; a trial whose model is not kept shows no link. The trials are completed over HTTP
by a hand-written worker that uploads known bytes, so the file is known."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, spec_doc
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e


def test_the_best_panel_and_the_trial_dialog_link_the_kept_model(
    processes: Processes, web: Page
) -> None:
    url = processes.server()
    with httpx.Client(base_url=url, timeout=30) as http:
        budget = {"max_trials": 2, "parallel_trials": 2, "epochs": 1}
        doc = spec_doc("take-it-home", budget=budget, keep_models=1)
        study = http.post("/api/v1/studies", json=doc).json()
        worker = ApiWorker(http)
        for trial, value in zip(worker.lease(2), (0.875, 0.5), strict=True):
            assert worker.report(trial, 1, val_accuracy=value).status_code == 200
            upload = http.put(
                f"/api/v1/workers/{worker.id}/trials/{trial['trial_id']}/model",
                content=f"weights of trial {trial['number']}".encode(),
                headers={"X-Lease-Token": trial["token"]},
            )
            assert upload.status_code == 200
            assert worker.post(trial, "complete").status_code == 200
    page = web.page
    page.goto(f"{url}/#/studies/{study['id']}")
    expect(page.locator("#best-value")).to_have_text("0.875")
    link = page.locator("#best-model")
    expect(link).to_have_text("Download model")
    web.shoot("model-best")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "take-it-home-trial-0.pt"
    assert Path(download.value.path()).read_bytes() == b"weights of trial 0"

    page.locator("#best-value").click()
    dialog = page.locator("#trial-dialog")
    expect(dialog.locator("dd[data-fact='Model'] a")).to_have_text("Download model")
    with page.expect_download() as again:
        dialog.locator("#trial-model").click()
    assert Path(again.value.path()).read_bytes() == b"weights of trial 0"

    # Trial #1 was worse: its upload was not kept, so its dialog offers nothing to download.
    # The dialog is closed and the address changed to trial #1 in one task, so the dialog's
    # close event (a task later) comes while the address names trial #1: it must not take the
    # page back to the study (a CI run lost trial #1's dialog that way, closing and going
    # there in two steps).
    page.evaluate(
        """(address) => {
            document.querySelector("#trial-dialog button.close").click();
            window.location.hash = address;
        }""",
        f"#/studies/{study['id']}/trials/1",
    )
    expect(dialog.locator("h2")).to_have_text("Trial #1")
    expect(page.locator("#trial-dialog dd[data-fact='Reason']")).to_be_visible()
    assert page.evaluate("window.location.hash") == f"#/studies/{study['id']}/trials/1"
    expect(page.locator("#trial-model")).to_have_count(0)
    assert web.errors == []
