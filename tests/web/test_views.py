"""Every view of the page as a phone, a keyboard and a screen reader meet it, and every action
the API has, in headless Chromium against a real `hpo server`. The studies are made over HTTP
by hand-written workers (tests.conftest.ApiWorker, the multi-fidelity tests' FakeTrainer), so
what the page shows is known exactly. Screenshots go to test-output/web/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, spec_doc
from tests.service.api.test_multifidelity_api import SH, FakeTrainer, _curve
from tests.web.conftest import Page, sync_api

expect = sync_api.expect
pytestmark = pytest.mark.e2e
WORKER = "gpu-node-with-a-long-hostname-07.cluster.example:cuda:0"


def _nine_three_one(http: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished 9 -> 3 -> 1 successive-halving study and its trials."""
    doc = spec_doc("sh-nine", strategy=SH, budget={"epochs": 9, "parallel_trials": 9})
    study = http.post("/api/v1/studies", json=doc).json()
    FakeTrainer(http, ApiWorker(http, WORKER)).run()
    trials = http.get(f"/api/v1/studies/{study['id']}/trials", params={"limit": 100}).json()
    return study, trials["items"]


def _random(http: httpx.Client, name: str, values: list[list[float]]) -> dict[str, Any]:
    """A random-search study whose trials report `values` (one list of epochs each) and
    complete; its budget allows a few more."""
    doc = spec_doc(name, budget={"max_trials": len(values) + 2, "parallel_trials": 4, "epochs": 3})
    study: dict[str, Any] = http.post("/api/v1/studies", json=doc).json()
    worker = ApiWorker(http, f"{name}-worker")
    for trial, curve in zip(worker.lease(len(values)), values, strict=True):
        assert worker.run(trial, curve).status_code == 200
    return study


def _views(study: int, trial: int) -> dict[str, str]:
    return {
        "studies": "#/",
        "launch": "#/new",
        "reference": "#/spec",
        "study": f"#/studies/{study}",
        "trial": f"#/studies/{study}/trials/{trial}",
    }


def _ready(page: Any, view: str) -> None:
    """Wait until `view` shows its data (not a loading state)."""
    ready = {
        "studies": "#studies tr[data-study]",
        "launch": "textarea[name=spec]",
        "reference": "#spec-reference [data-field=max_trials]",
        "study": "#trials tbody tr[data-number]",
        "trial": "#trial-dialog .mini path.curve",
    }[view]
    expect(page.locator(ready).first).to_be_visible()
    if view == "study":
        expect(page.locator("[data-chart=curves] path.curve").first).to_be_visible()
        expect(page.locator("#panel-rungs tr[data-rung]").first).to_be_visible()


def test_every_view_fits_a_phone_and_has_no_serious_accessibility_violation(
    processes: Processes, phone: Page, web: Page
) -> None:
    url = processes.server()
    with httpx.Client(base_url=url) as http:
        study, _ = _nine_three_one(http)
    for page, scheme in ((phone, "light"), (web, "dark")):
        page.page.emulate_media(color_scheme=scheme)
        for view, where in _views(study["id"], 8).items():
            page.page.goto(f"{url}/{where}")
            _ready(page.page, view)
            if page is phone:
                assert page.horizontal_overflow() == [], view
                crumbs = page.page.locator("#crumbs")  # the breadcrumb is not cut short
                assert crumbs.evaluate("el => el.scrollWidth <= el.clientWidth"), view
                page.shoot(f"phone-{view}")
            if page is phone and view == "study":  # Stop and Resume start on the screen
                for button in ("#stop", "#resume"):
                    box = page.page.locator(button).bounding_box()
                    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            if view == "studies":  # a worker's name stays on one line, not broken mid-word
                name = page.page.locator(f'#workers tr[data-worker="{WORKER}"] td').first
                lines = "td => { const r = document.createRange(); r.selectNodeContents(td);"
                assert name.evaluate(f"{lines} return r.getClientRects().length; }}") == 1
            assert page.axe() == [], (view, scheme)


def test_the_rung_table_reads_nine_three_one_and_opens_by_keyboard(
    processes: Processes, web: Page
) -> None:
    url = processes.server()
    with httpx.Client(base_url=url) as http:
        study, trials = _nine_three_one(http)
    page = web.page
    page.goto(f"{url}/#/studies/{study['id']}")
    rows = page.locator("#panel-rungs tbody tr[data-rung]")
    expect(rows).to_have_count(3)
    for rung, (epochs, trained, promoted) in enumerate([(1, 9, 3), (3, 3, 1), (9, 1, 0)]):
        row = rows.nth(rung)
        expect(row.locator('[data-col="Epochs"]')).to_have_text(str(epochs))
        expect(row.locator('[data-col="Trained to it"]')).to_have_text(str(trained))
        expect(row.locator('[data-col="Promoted"]')).to_have_text(str(promoted))
        best = max(_curve(t["params"], epochs) for t in trials if t["rung"] >= rung)
        expect(row.locator('[data-col="Best at its epoch"]')).to_have_text(f"{best:.4g}")
    # the header cells line up with the numbers under them
    head = page.locator("#panel-rungs thead th")
    assert (
        head.evaluate_all("ths => ths.map((th) => getComputedStyle(th).textAlign)")
        == ["right"] * head.count()
    )

    # keyboard only: focus rung 0's row, Enter lists every trial that reached it
    rows.nth(0).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#trials tbody tr[data-number]")).to_have_count(9)
    rows.nth(1).focus()
    page.keyboard.press(" ")
    expect(page.locator("#trials tbody tr[data-number]")).to_have_count(3)
    expect(page.locator("#trials .filters .chip")).to_contain_text("reached rung 1")

    # importance and parallel coordinates compare all nine at the first rung, and say so
    expect(page.locator("[data-chart=parallel] path.pc-line")).to_have_count(9)
    expect(page.locator("#panel-parallel .note")).to_contain_text("first rung")
    expect(page.locator("#panel-importance .note")).to_contain_text("PED-ANOVA over 9 trials")
    web.shoot("rungs-nine-three-one")


def test_keyboard_sorting_and_focus_after_stop(processes: Processes, web: Page) -> None:
    url = processes.server()
    with httpx.Client(base_url=url) as http:
        study = _random(http, "sortable", [[0.5, 0.6], [0.7, 0.9], [0.2, 0.3]])
    page = web.page
    page.goto(f"{url}/#/studies/{study['id']}")
    numbers = page.locator("#trials tbody tr[data-number]")
    expect(numbers).to_have_count(3)

    def expect_order(wanted: list[str]) -> None:
        for i, number in enumerate(wanted):
            expect(numbers.nth(i)).to_have_attribute("data-number", number)

    listed = httpx.get(f"{url}/api/v1/studies/{study['id']}/trials").json()["items"]
    by_value = [str(t["number"]) for t in sorted(listed, key=lambda t: t["value"])]

    # Tab reaches the Value header's sort button; Enter sorts ascending, again descending
    sort = page.locator('#trials th[data-sort="value"] button')
    sort.focus()
    assert page.evaluate("document.activeElement.textContent") == "Value"
    page.keyboard.press("Enter")
    expect(page.locator('#trials th[data-sort="value"]')).to_have_attribute(
        "aria-sort", "ascending"
    )
    expect_order(by_value)
    page.keyboard.press("Enter")
    expect(page.locator('#trials th[data-sort="value"]')).to_have_attribute(
        "aria-sort", "descending"
    )
    expect_order(by_value[::-1])
    # click-to-sort works the same way with a mouse
    page.locator('#trials th[data-sort="number"] button').click()
    expect_order(["0", "1", "2"])

    # Stop by keyboard: the focus moves to Resume (not to the page body), and the study is
    # not multi-fidelity, so its trial dialog shows no bracket or rung
    page.locator("#stop").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#study-state")).to_have_text("stopped")
    expect(page.locator("#resume")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#study-state")).to_have_text("running")
    expect(page.locator("#stop")).to_be_focused()
    numbers.first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#trial-dialog h2")).to_have_text("Trial #0")
    expect(page.locator('#trial-dialog [data-fact="Worker"]')).to_have_text("sortable-worker")
    expect(page.locator('#trial-dialog [data-fact="Bracket / rung"]')).to_have_count(0)


def test_delete_budget_spec_clone_search_and_compare(processes: Processes, web: Page) -> None:
    url = processes.server()
    with httpx.Client(base_url=url) as http:
        study = _random(http, "acts", [[0.5, 0.6, 0.7], [0.4, 0.8, 0.9]])
        _random(http, "other-study", [[0.1]])
    api = f"{url}/api/v1/studies/{study['id']}"
    page = web.page
    page.goto(url)
    # search the studies list
    rows = page.locator("#studies tr[data-study]")
    expect(rows).to_have_count(2)
    page.locator("input[name=study-filter]").fill("acts random")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-study", "acts")
    page.locator("input[name=study-filter]").fill("no-such")
    expect(page.locator("#studies")).to_contain_text("No study matches the filter.")
    page.goto(f"{url}/#/studies/{study['id']}")
    expect(page.locator("#study-name")).to_have_text("acts")

    # the spec, as submitted, to read and copy
    page.get_by_role("button", name="Spec").click()
    spec = page.locator("#spec-dialog textarea")
    assert '"name": "acts"' in spec.input_value()
    page.locator("#spec-dialog").get_by_role("button", name="Copy").click()
    expect(page.locator("#spec-dialog [role=alert]")).to_have_text(re.compile("Copied|Selected"))
    assert web.axe() == []
    page.keyboard.press("Escape")
    expect(page.locator("#spec-dialog")).to_have_count(0)

    # raise the budget: the header and the server agree; a bad value is named
    page.get_by_role("button", name="Budget…").click()
    assert web.axe() == []
    page.locator("#budget-dialog input[name=max_trials]").fill("0")
    page.locator("#budget-dialog input[name=parallel_trials]").fill("2")
    page.locator("#budget-dialog").get_by_role("button", name="Save").click()
    assert page.locator("#budget-dialog input[name=max_trials]").evaluate(
        "el => !el.validity.valid"
    )  # the browser refuses 0 before the server sees it
    page.locator("#budget-dialog input[name=max_trials]").fill("12")
    page.locator("#budget-dialog").get_by_role("button", name="Save").click()
    expect(page.locator("#budget-dialog")).to_have_count(0)
    expect(page.locator(".study-head")).to_contain_text("of 12 trials finished")
    assert httpx.get(api).json()["max_trials"] == 12

    # compare two trials: params side by side, curves overlaid
    boxes = page.locator("#trials input[name=compare]")
    expect(boxes).to_have_count(2)
    compare = page.locator("#trials").get_by_role("button", name=re.compile("^Compare"))
    expect(compare).to_be_disabled()
    boxes.nth(0).check()
    boxes.nth(1).check()
    expect(compare).to_have_text("Compare 2")
    compare.click()
    dialog = page.locator("#compare-dialog")
    expect(dialog.locator("h2")).to_have_text("Comparing 2 trials")
    expect(dialog.locator('tr[data-param="lr"] td')).to_have_count(2)
    expect(dialog.locator("[data-chart=compare] path.curve")).to_have_count(2)
    assert web.axe() == []
    web.shoot("compare-two-trials")
    dialog.get_by_role("button", name="Close").click()

    # clone into the launch form, launch the copy
    page.get_by_role("button", name="Clone").click()
    editor = page.locator("textarea[name=spec]")
    expect(editor).to_have_value(re.compile('"name": "acts-copy"'))
    page.get_by_role("button", name="Launch").click()
    expect(page.locator("#study-name")).to_have_text("acts-copy")
    copy = httpx.get(f"{url}/api/v1/studies").json()
    assert {s["name"] for s in copy} == {"acts", "acts-copy", "other-study"}

    # delete, after a confirmation (Cancel keeps it)
    page.goto(f"{url}/#/studies/{study['id']}")
    expect(page.locator("#study-name")).to_have_text("acts")
    page.get_by_role("button", name="Delete…").click()
    expect(page.locator("#delete-dialog")).to_contain_text("Delete acts?")
    page.locator("#delete-dialog").get_by_role("button", name="Cancel").click()
    assert httpx.get(api).status_code == 200
    page.get_by_role("button", name="Delete…").click()
    page.locator("#delete-dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("#studies tr[data-study]")).to_have_count(2)
    assert httpx.get(api).status_code == 404


def test_launch_form_help_in_place(processes: Processes, web: Page, tmp_path: Path) -> None:
    url = processes.server()
    page = web.page
    page.goto(url)
    page.get_by_role("button", name="New study").click()
    editor = page.locator("textarea[name=spec]")

    # Example fills a valid spec
    page.get_by_role("button", name="Example").click()
    expect(editor).to_have_value(re.compile(r"^name: study-\d{14}\n"))

    # Load file… reads a file; near-miss and misplaced fields get a hint each
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "name: typo\nstrategy:\n  kind: random\nbudget:\n  max_trial: 3\n  n_configs: 9\n"
        "space:\n  lr: {type: float, low: 0.001, hgih: 0.1}\n"
        "workload: {model: mlp, dataset: synthetic}\n"
    )
    page.locator("input[type=file]").set_input_files(str(typo))
    expect(editor).to_have_value(typo.read_text())
    page.get_by_role("button", name="Launch").click()
    near = page.locator('.errors .error[data-field="budget.max_trial"]')
    expect(near.locator(".hint")).to_have_text("did you mean max_trials?")
    expect(near.locator(".hint code")).to_have_text("max_trials")
    misplaced = page.locator('.errors .error[data-field="budget.n_configs"]')
    expect(misplaced.locator(".hint")).to_have_text("n_configs belongs under strategy")
    expect(misplaced.get_by_role("button", name="line 6")).to_be_visible()
    param = page.locator('.errors .error[data-field="space.lr.hgih"]')
    expect(param.locator(".hint")).to_have_text("did you mean high?")

    # a YAML syntax error gets the same line button, which selects the line
    editor.fill("name: broken\nbudget: {max_trials: 3\nspace: {}\n")
    expect(page.locator(".errors .error")).to_have_count(0)  # stale errors went with the edit
    page.get_by_role("button", name="Launch").click()
    error = page.locator(".errors .error")
    expect(error).to_contain_text("not valid YAML")
    line = error.get_by_role("button", name=re.compile(r"^line \d+$"))
    expect(line).to_be_visible()
    number = int(line.inner_text().split()[1])
    line.click()
    selected = editor.evaluate("el => el.value.slice(0, el.selectionStart).split('\\n').length")
    assert selected == number
    expect(page.locator(".editor .gutter .bad")).to_have_text(str(number))

    # typing clears the errors and the marks they made
    editor.press("End")
    editor.type(" ")
    expect(page.locator(".errors .error")).to_have_count(0)
    expect(page.locator(".editor .gutter .bad")).to_have_count(0)
    expect(page.locator(".errors")).to_contain_text("launch again")

    # the spec reference, served by this server, is linked from the form
    link = page.get_by_role("link", name="spec reference")
    assert link.get_attribute("href") == "#/spec"
    page.goto(f"{url}/#/spec")
    budget = page.locator('#spec-reference section[aria-label="spec budget"]')
    expect(budget.locator('tr[data-field="max_trials"]')).to_contain_text("integer")
    strategy = page.locator('#spec-reference section[aria-label="spec strategy"]')
    expect(strategy.locator('tr[data-field="kind"]')).to_contain_text("successive_halving")


def test_the_theme_button_cycles_and_is_remembered(processes: Processes, web: Page) -> None:
    url = processes.server()
    page = web.page
    page.emulate_media(color_scheme="light")
    page.goto(url)
    theme = page.locator("#theme")
    html = page.locator("html")
    expect(theme).to_have_text("theme: auto")
    expect(html).to_have_attribute("data-theme", "light")
    theme.click()
    expect(theme).to_have_text("theme: light")
    theme.click()
    expect(theme).to_have_text("theme: dark")
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 20, 24)"
    page.reload()
    expect(theme).to_have_text("theme: dark")
    expect(html).to_have_attribute("data-theme", "dark")
    theme.click()  # back to auto: the system's (light) scheme again
    expect(theme).to_have_text("theme: auto")
    expect(html).to_have_attribute("data-theme", "light")


def test_the_api_docs_render_with_no_internet(processes: Processes, web: Page) -> None:
    url = processes.server(HPO_API_TOKEN="docs-token")
    page = web.page
    outside: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    assert httpx.get(f"{url}/docs").status_code == 401  # not public: the user token opens it
    page.goto(url)
    page.locator("input[name=token]").fill("docs-token")
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#studies")).to_contain_text("No study yet")
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="API docs").click()
    docs = opened.value
    expect(docs.locator(".opblock").first).to_be_visible()
    assert docs.locator(".opblock").count() >= 20
    expect(docs.locator(".opblock-summary-path", has_text="/api/v1/studies").first).to_be_visible()
    docs.goto(f"{url}/redoc")
    expect(docs.get_by_role("heading", name="Create Study")).to_be_visible()
    assert outside == []
