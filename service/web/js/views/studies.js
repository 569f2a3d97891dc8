// The home page: every study with its progress and best value, the launch form, and the
// workers panel. Both lists reload every few seconds while the page is open.

import { api } from "../api.js";
import { badge, count, crumbs, h, num, scroller, when } from "../dom.js";
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
  // Several objectives: `best` is the Pareto set, counted
  const best = Array.isArray(study.best)
    ? `${count(study.best.length)} on the front`
    : study.best
      ? num(study.best.value)
      : "—";
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

/** Whether every space-separated term of `query` is found in the study's name, strategy or
 * state (case-insensitive). */
function matches(study, query) {
  const text = `${study.name} ${study.spec.strategy.kind} ${study.state}`.toLowerCase();
  return query
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((term) => text.includes(term));
}

/** The spec of study `id` as launch-form text, renamed so that it can be launched again. */
async function cloneText(id) {
  const study = await api.study(id);
  const suffix = "-copy";
  const name = `${study.name.slice(0, 64 - suffix.length)}${suffix}`;
  return JSON.stringify({ ...study.spec, name }, null, 2);
}

/** The list; target.launch opens the launch form, target.clone (a study id) fills it with a
 * copy of that study's spec. */
export function mountStudies(main, target = {}) {
  crumbs("Studies");
  const body = h("tbody");
  const note = h("span", { class: "note" });
  const search = h("input", {
    type: "search",
    name: "study-filter",
    placeholder: "filter: name, strategy or state",
    "aria-label": "filter studies",
  });
  let all = [];
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
          onCancel: () => {
            showLaunch(false);
            if (window.location.hash.startsWith("#/new")) window.location.hash = "#/";
          },
        })
      : null;
    launchSlot.replaceChildren(...(launch ? [launch.el] : []));
    if (launch) launch.focus();
  }

  async function open(next) {
    if (!next.launch) return;
    if (!launch) showLaunch(true);
    if (next.clone === null || next.clone === undefined) return;
    try {
      launch.setText(await cloneText(next.clone));
    } catch (err) {
      launch.setText("");
      note.textContent = `could not clone study ${next.clone}: ${err.message}`;
    }
  }

  const list = h(
    "section",
    { class: "panel", "aria-label": "studies" },
    h("div", { class: "panel-head" }, h("h2", {}, "Studies"), toggle, search, note),
    scroller(
      "studies table",
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
      all = await api.studies();
      names = new Map(all.map((s) => [s.id, s.name]));
      draw();
    } catch (err) {
      note.textContent = `could not load the studies: ${err.message}`;
    }
    await workers.refresh(names).catch(() => {});
  }

  function draw() {
    const shown = all.filter((s) => matches(s, search.value));
    const total = `${all.length} ${all.length === 1 ? "study" : "studies"}`;
    note.textContent = shown.length < all.length ? `${shown.length} of ${total}` : total;
    const none = all.length ? "No study matches the filter." : null;
    body.replaceChildren(
      ...(shown.length
        ? shown.map(studyRow)
        : none
          ? [h("tr", {}, h("td", { colspan: 6, class: "empty" }, none))]
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
  }

  search.addEventListener("input", draw);
  refresh();
  open(target);
  const timer = setInterval(refresh, POLL_MS);
  return { update: open, unmount: () => clearInterval(timer) };
}
