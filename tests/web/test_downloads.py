"""The study view's download links give the same files as the export routes, in headless
Chromium against a real `hpo server`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, spec_doc
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e


def test_the_study_view_downloads_its_trials(processes: Processes, web: Page) -> None:
    url = processes.server()
    with httpx.Client(base_url=url) as http:
        study = http.post("/api/v1/studies", json=spec_doc("to-take-home")).json()
        worker = ApiWorker(http)
        for trial in worker.lease(2):
            assert worker.run(trial, [0.5, 0.625]).status_code == 200
        exported = {
            fmt: http.get(f"/api/v1/studies/{study['id']}/trials.{fmt}").text
            for fmt in ("csv", "jsonl")
        }
    page = web.page
    page.goto(f"{url}/#/studies/{study['id']}")
    expect(page.locator("#study-name")).to_have_text("to-take-home")
    for fmt, label in (("csv", "Trials .csv"), ("jsonl", "Trials .jsonl")):
        with page.expect_download() as download:
            page.get_by_role("link", name=label).click()
        assert download.value.suggested_filename == f"to-take-home-trials.{fmt}"
        saved = Path(download.value.path()).read_text()
        assert saved == exported[fmt]
        assert saved.count("\n") == (3 if fmt == "csv" else 2)  # header + 2, or 2 lines
    assert web.errors == []
