"""The page's workers panel in headless Chromium shows each slot of ONE real `hpo worker
--devices cpu --slots 2 --fuse 1` command as a worker of its own, and what each trains; and how
many trials a worker fuses (`--fuse auto` is 8 on a CPU)."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from tests.conftest import Processes, spec_doc
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e
LIVE = 60_000  # ms: the worker's start (PyTorch's import in each slot) fits well within it

# About half a second per epoch on one CPU thread: both trials are still running when looked at.
SLOW = {"model": "mlp", "dataset": "synthetic", "n_samples": 60000, "width": 256}


def test_the_workers_panel_shows_each_slot_of_one_worker_command(
    processes: Processes, web: Page
) -> None:
    url = processes.server()
    budget = {"max_trials": 2, "parallel_trials": 2, "epochs": 30}
    study = httpx.post(
        f"{url}/api/v1/studies", json=spec_doc("slots", budget=budget, workload=SLOW)
    )
    assert study.status_code == 201, study.text
    # --fuse 1: one trial per slot (`auto` is 8 on a CPU, and one slot could then train both
    # trials as a group; the panel's "x K" of a fusing worker is the next test's).
    processes.start(
        "slots", "worker", "--server", url, "--devices", "cpu", "--slots", "2", "--fuse", "1"
    )
    page = web.page
    page.goto(url)
    rows = page.locator("#workers tr[data-worker]")
    expect(rows).to_have_count(2, timeout=LIVE)
    host = socket.gethostname()
    for slot in (0, 1):
        row = page.locator(f'#workers tr[data-worker$="/cpu#{slot}"]')
        name = re.compile(rf"^{re.escape(host)}:\d+/cpu#{slot}$")
        expect(row.locator("td.name")).to_have_text(name)
        expect(row.locator(f'td[data-slot="{slot}"]')).to_have_text(f"cpu #{slot} of 2")
        # Each slot trains a trial of its own (the panel refreshes as they start).
        expect(row).to_contain_text("slots #", timeout=LIVE)
    expect(page.locator("#workers")).to_contain_text("2 registered")
    trained = {page.locator(f'#workers tr[data-worker$="/cpu#{s}"] a').inner_text() for s in (0, 1)}
    assert trained == {"slots #0", "slots #1"}
    web.shoot("workers-slots")


def test_the_workers_panel_shows_how_many_trials_a_worker_fuses(
    processes: Processes, web: Page
) -> None:
    url = processes.server()
    processes.worker("auto", url)  # --devices cpu --threads 1: one slot, --fuse auto
    processes.worker("alone", url, "--fuse", "1")
    page = web.page
    page.goto(url)
    expect(page.locator("#workers tr[data-worker]")).to_have_count(2, timeout=LIVE)
    devices = page.locator("#workers td[data-slot]")
    # `auto` is 8 on a CPU: that worker's device reads "cpu \u00d7 8", the other's "cpu".
    expect(devices.filter(has_text="cpu \u00d7 8")).to_have_count(1)
    expect(devices.filter(has_text=re.compile(r"^cpu$"))).to_have_count(1)
