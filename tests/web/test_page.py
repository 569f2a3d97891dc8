"""The web page in headless Chromium against real `hpo server` and `hpo worker` processes: launch
a study from the page and watch it live, open a trial, stop the study; the launch form shows the
server's validation errors; names and values are shown as text; the page catches up after a
server restart. Screenshots go to test-output/web/."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ApiWorker, Processes, free_port, spec_doc
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e
LIVE = 60_000  # ms: real training and a server start fit well within it


def _spec(name: str, **overrides: Any) -> str:
    """A small random-search study of real training, as YAML."""
    sections = {
        "strategy": {"kind": "random", "seed": 1},
        "budget": {"max_trials": 12, "parallel_trials": 1, "epochs": 6},
        **overrides,
    }
    return yaml.safe_dump(spec_doc(name, **sections), sort_keys=False)


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process below it, parents first (Linux's /proc)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # it ended meanwhile
            continue
        for child in children:
            found += _process_tree(int(child))
    return found


def _signal_tree(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, signum)


def _count(web: Page, state: str) -> int:
    return int(web.page.locator(f'#counts [data-count="{state}"] b').inner_text())


def test_launch_watch_a_trial_and_stop(processes: Processes, web: Page) -> None:
    url = processes.server()
    processes.worker("w1", url)
    page = web.page
    page.goto(url)
    expect(page.locator("#studies")).to_contain_text("No study yet")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    page.get_by_role("button", name="New study").click()
    # Long enough that it is still running when the test stops it (trials take a second).
    long_study = {"max_trials": 500, "parallel_trials": 1, "epochs": 6}
    page.locator("textarea[name=spec]").fill(_spec("from-the-page", budget=long_study))
    page.get_by_role("button", name="Launch").click()
    expect(page.locator("#study-name")).to_have_text("from-the-page")
    expect(page.locator("#live")).to_have_attribute("data-status", "live")

    # the completed count rises while we watch, without a reload
    page.wait_for_function(
        "() => Number(document.querySelector('[data-count=completed] b').textContent) >= 1",
        timeout=LIVE,
    )
    seen = _count(web, "completed")
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-count=completed] b').textContent) > {seen}",
        timeout=LIVE,
    )
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("[data-chart=curves] path.curve").first).to_be_visible()
    expect(page.locator("[data-chart=history] circle.dot").first).to_be_visible()
    expect(page.locator("#best-value")).to_be_visible()
    web.shoot("study-live-light")

    # open trial #0 from the table: its curve and details
    page.locator('#trials tbody tr[data-number="0"]').click()
    dialog = page.locator("#trial-dialog")
    expect(dialog.locator("h2")).to_have_text("Trial #0")
    expect(dialog.locator('[data-fact="Worker"]')).to_have_text(re.compile(r"\S"))
    expect(dialog.locator('.mini[data-metric="val_accuracy"] path.curve')).to_have_count(1)
    expect(dialog.locator('tr[data-param="lr"]')).to_be_visible()
    assert page.evaluate("location.hash").endswith("/trials/0")
    web.shoot("trial-dialog")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # stop: the header says so, the server agrees, resume becomes possible
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#study-state")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    study_id = int(page.evaluate("location.hash").split("/")[2])
    assert httpx.get(f"{url}/api/v1/studies/{study_id}").json()["state"] == "stopped"
    page.emulate_media(color_scheme="dark")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    web.shoot("study-stopped-dark")
    page.goto(url)
    expect(page.locator('#studies tr[data-study="from-the-page"]')).to_contain_text("stopped")
    expect(page.locator("#workers tr[data-worker]")).to_have_count(1)
    web.shoot("studies-and-workers-dark")


def test_launch_form_shows_the_servers_messages(processes: Processes, web: Page) -> None:
    url = processes.server()
    httpx.post(f"{url}/api/v1/studies", json=spec_doc("taken")).raise_for_status()
    page = web.page
    page.goto(url)
    page.get_by_role("button", name="New study").click()
    editor = page.locator("textarea[name=spec]")
    bad = _spec("typo").replace("high: 0.1", "high: 0.00001")
    editor.fill(bad)
    page.get_by_role("button", name="Launch").click()
    error = page.locator('.errors .error[data-field="space.lr.high"]')
    expect(error).to_contain_text("must be greater than")
    expect(error).to_contain_text("space \u203a lr \u203a high")
    lr_line = next(i for i, line in enumerate(bad.splitlines(), 1) if "high: 0.00001" in line)
    expect(page.locator(".editor .gutter .bad")).to_have_text(str(lr_line))
    web.shoot("launch-form-error")

    editor.fill(_spec('<img src=x onerror="window.__pwned=1">'))
    page.get_by_role("button", name="Launch").click()
    expect(page.locator('.errors .error[data-field="name"]')).to_contain_text("may contain only")
    assert page.evaluate("window.__pwned") is None

    editor.fill(_spec("taken"))
    page.get_by_role("button", name="Launch").click()
    expect(page.locator(".errors .error")).to_contain_text("a study named 'taken' already exists")
    assert page.evaluate("location.hash") in ("", "#/")


def test_names_and_values_are_shown_as_text(processes: Processes, web: Page) -> None:
    url = processes.server()
    evil = '<img src=x onerror="window.__pwned=1">'
    space = {"tag": {"type": "categorical", "choices": ["<b>bold</b>"]}}
    repeats = {"kind": "random", "seed": 0, "allow_repeats": True}  # two trials of one choice
    doc = spec_doc("escaping", space=space, strategy=repeats)
    study = httpx.post(f"{url}/api/v1/studies", json=doc).json()
    with httpx.Client(base_url=url) as http:
        worker = ApiWorker(http, evil)
        for trial in worker.lease(2):
            worker.report(trial, 1, **{"val_accuracy": 0.5, "<i>metric</i>": 1.0})
            worker.post(trial, "complete").raise_for_status()
    # the API refuses such a name; a database written by other means may still hold one
    script = "<script>window.__pwned=2</script>"
    with sqlite3.connect(processes.tmp_path / "hpo.db") as db:
        db.execute("UPDATE hpo_studies SET name = ? WHERE id = ?", (script, study["id"]))
    page = web.page
    page.goto(f"{url}/#/studies/{study['id']}")
    expect(page.locator("#study-name")).to_have_text(script)
    expect(page.locator("#crumbs")).to_contain_text(script)
    expect(page.locator("#trials tbody tr[data-number]")).to_have_count(2)
    cells = page.locator("#trials tbody td")
    expect(cells.filter(has_text="<b>bold</b>")).not_to_have_count(0)
    expect(cells.filter(has_text=evil)).to_have_count(2)
    expect(page.locator("select[name=metric] option", has_text="<i>metric</i>")).to_have_count(1)
    assert (
        page.locator("#main b:text-is('bold'), #main img[src=x], #main i:text-is('metric')").count()
        == 0
    )
    page.goto(url)
    expect(page.locator("#workers")).to_contain_text(evil)
    expect(page.locator("#studies")).to_contain_text(script)
    assert page.evaluate("window.__pwned") is None
    web.shoot("escaped-names")


def test_page_catches_up_after_a_server_restart(processes: Processes, web: Page) -> None:
    port = free_port()  # the restarted server comes back on the same one
    url = processes.server(port=port)
    server = processes.process("server")
    spec = yaml.safe_load(
        _spec(
            "restart",
            strategy={
                "kind": "successive_halving",
                "n_configs": 9,
                "min_epochs": 1,
                "reduction_factor": 3,
                "seed": 0,
            },
        )
    )
    spec["budget"] = {"epochs": 9, "parallel_trials": 1}
    study = httpx.post(f"{url}/api/v1/studies", json=spec).json()
    page = web.page
    page.goto(f"{url}/#/studies/{study['id']}")
    expect(page.locator("#live")).to_have_attribute("data-status", "live")
    expect(page.locator("#panel-rungs")).to_be_visible()
    worker = processes.worker("w1", url)
    # The worker is frozen as soon as it holds its first trial, so that the server dies at the
    # same point of the study every time: whatever the page had seen by then, nearly all of the
    # study's events come after the restart (a worker sends its reports in bursts, and a page
    # that first hears of the study a burst late would otherwise see most of it before).
    deadline = time.monotonic() + LIVE / 1000
    trials = f"{url}/api/v1/studies/{study['id']}/trials"
    while not httpx.get(trials).json()["items"]:
        assert time.monotonic() < deadline, "the worker took no trial:\n" + processes.log("w1")
        assert worker.poll() is None, processes.log("w1")
        time.sleep(0.01)
    frozen = _process_tree(worker.pid)
    _signal_tree(frozen, signal.SIGSTOP)
    page.wait_for_function("() => window.hpoEvents.ids.length >= 1", timeout=LIVE)
    assert httpx.get(f"{url}/api/v1/studies/{study['id']}").json()["state"] == "running"
    before = max(page.evaluate("window.hpoEvents.ids"))

    # a crash: SIGTERM would wait for the page's open event stream to end first (uvicorn's
    # graceful shutdown has no time limit in `hpo server`)
    server.send_signal(signal.SIGKILL)
    server.wait(20)
    expect(page.locator("#live")).to_have_attribute("data-status", "reconnecting")
    _signal_tree(frozen, signal.SIGCONT)
    time.sleep(1)  # the worker's reports wait for the server meanwhile
    processes.server("server2", port=port)
    expect(page.locator("#live")).to_have_attribute("data-status", "live", timeout=LIVE)

    expect(page.locator("#study-state")).to_have_text("completed", timeout=LIVE)
    ids = page.evaluate("window.hpoEvents.ids")
    events = httpx.get(f"{url}/api/v1/studies/{study['id']}/trials", params={"limit": 100}).json()
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    assert ids == list(range(ids[0], ids[-1] + 1)), "an event was missed"
    assert ids[-1] > before + 20  # most of the study happened after the restart
    final = httpx.get(f"{url}/api/v1/studies/{study['id']}").json()
    assert _count(web, "completed") == final["counts"]["completed"] == 1
    assert _count(web, "pruned") == final["counts"]["pruned"] == 8
    expect(page.locator("[data-chart=curves] path.curve.best")).to_have_count(1)
    # every trial, compared at the first rung's epoch
    expect(page.locator("[data-chart=parallel] path.pc-line")).to_have_count(9)
    expect(page.locator('#panel-rungs tr[data-rung="2"]')).to_contain_text("1")
    page.locator('#panel-rungs tr[data-rung="1"]').click()  # every trial that reached rung 1
    expect(page.locator("#trials tbody tr[data-number]")).to_have_count(3)
    assert len(events["items"]) == 9
    web.shoot("successive-halving-rungs")


def test_a_server_with_tokens_asks_for_one(processes: Processes, web: Page) -> None:
    url = processes.server(HPO_API_TOKEN="page-token")
    page = web.page
    page.goto(url)
    token = page.locator("input[name=token]")
    token.fill("not-it")
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not the user token.")
    token.fill("page-token")
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#studies")).to_contain_text("No study yet")
    page.reload()  # the session cookie stands for the token from now on
    expect(page.locator("#studies")).to_contain_text("No study yet")
    expect(page.locator("#workers")).to_contain_text("No worker yet")
