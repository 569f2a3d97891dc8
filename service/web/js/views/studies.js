// The home page: every study with its progress and best value, the launch form, and the
// workers panel. Both lists reload every few seconds while the page is open.

import { api } from "../api.js";
import { badge, count, crumbs, h, num, when } from "../dom.js";
import { launchPanel } from "./launch.js";
import { workersPanel } from "./workers.js";

const POLL_MS = 3000;

function progress(study) {
  const done = study.counts.completed + study.counts.pruned + study.counts.failed;
  const share = study.max_trials ? Math.min(1, done / study.max_trials) : 0;
  return h(
    "span",
    { dataset: { done, max: study.max_trials } },
    h(
      "span",
      { class: "progress", "aria-hidden": "true" },
      h("span", { style: `width: ${(share * 100).toFixed(1)}%` }),
    ),
    `${count(done)} / ${count(study.max_trials)}`,
  );
}

function studyRow(study) {
  const href = `#/studies/${study.id}`;
  const best = study.best ? num(study.best.value) : "—";
  return h(
    "tr",
    {
      class: "clickable",
      dataset: { study: study.name },
      onclick: (e) => e.target.closest("a") || (window.location.hash = href),
    },
    h("td", { class: "wrap" }, h("a", { href }, study.name)),
    h("td", {}, study.spec.strategy.kind),
    h("td", {}, badge(study.state)),
    h("td", {}, progress(study)),
    h("td", { class: "num" }, best),
    h("td", {}, when(study.created_at)),
  );
}

export function mountStudies(main) {
  crumbs("Studies");
  const body = h("tbody");
  const note = h("span", { class: "note" });
  const launchSlot = h("div");
  const workers = workersPanel();
  let launch = null;
  const toggle = h(
    "button",
    { type: "button", class: "primary", onclick: () => showLaunch(!launch) },
    "New study",
  );

  function showLaunch(on) {
    launch = on
      ? launchPanel({
          onLaunched: (study) => {
            window.location.hash = `#/studies/${study.id}`;
          },
          onCancel: () => showLaunch(false),
        })
      : null;
    launchSlot.replaceChildren(...(launch ? [launch.el] : []));
    if (launch) launch.focus();
  }

  const list = h(
    "section",
    { class: "panel", "aria-label": "studies" },
    h("div", { class: "panel-head" }, h("h2", {}, "Studies"), toggle, note),
    h(
      "div",
      { class: "scroll-x" },
      h(
        "table",
        { class: "data", id: "studies" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Strategy", "State", "Finished / max", "Best", "Created"].map((t) =>
              h("th", {}, t),
            ),
          ),
        ),
        body,
      ),
    ),
  );
  main.append(h("div", { class: "stack" }, launchSlot, list, workers.el));

  let names = new Map();
  async function refresh() {
    try {
      const studies = await api.studies();
      names = new Map(studies.map((s) => [s.id, s.name]));
      note.textContent = `${studies.length} ${studies.length === 1 ? "study" : "studies"}`;
      body.replaceChildren(
        ...(studies.length
          ? studies.map(studyRow)
          : [
              h(
                "tr",
                {},
                h(
                  "td",
                  { colspan: 6, class: "empty" },
                  "No study yet. Launch one with New study, or run hpo submit spec.yaml.",
                ),
              ),
            ]),
      );
    } catch (err) {
      note.textContent = `could not load the studies: ${err.message}`;
    }
    await workers.refresh(names).catch(() => {});
  }
  refresh();
  const timer = setInterval(refresh, POLL_MS);
  return { unmount: () => clearInterval(timer) };
}
