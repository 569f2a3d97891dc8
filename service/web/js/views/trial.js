// One trial in a dialog: its facts, params, and a small chart per reported metric; reloaded
// while it trains.

import { api } from "../api.js";
import { badge, duration, fill, h, num, paramText, when } from "../dom.js";
import { drawCurves } from "../charts/curves.js";
import { heldOut } from "./heldout.js";

function facts(trial, multiFidelity) {
  const rows = [
    // several objectives: one value each, in the spec's order
    trial.values
      ? ["Values", trial.values.map((v) => num(v)).join(" · ")]
      : ["Value", num(trial.value)],
    ["Epochs", String(trial.epochs)],
    ["Worker", trial.worker || "—"],
    ["Attempt", String(trial.attempt)],
    multiFidelity ? ["Bracket / rung", `${trial.bracket} / ${trial.rung}`] : null,
    ["Started", when(trial.started_at)],
    ["Finished", when(trial.finished_at)],
    ["Duration", duration(trial.duration_s)],
    ["Reason", trial.reason || "—"],
    trial.model_url
      ? [
          "Model",
          h("a", { id: "trial-model", href: trial.model_url, download: true }, "Download model"),
        ]
      : null,
    trial.test_metrics ? ["Test score", heldOut(trial.test_metrics, "trial-held-out")] : null,
  ];
  return h(
    "dl",
    { class: "facts" },
    rows.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, v)]),
  );
}

function paramsTable(trial) {
  const entries = Object.entries(trial.params);
  return h(
    "table",
    { class: "data", "aria-label": "params" },
    h("thead", {}, h("tr", {}, h("th", {}, "Param"), h("th", {}, "Value"))),
    h(
      "tbody",
      {},
      entries.map(([k, v]) =>
        h(
          "tr",
          { dataset: { param: k } },
          h("td", {}, k),
          h("td", { class: "wrap" }, paramText(v)),
        ),
      ),
    ),
  );
}

function metricCharts(trial) {
  const names = [];
  for (const point of trial.curve) {
    for (const name of Object.keys(point.metrics)) if (!names.includes(name)) names.push(name);
  }
  if (!names.length) return [h("p", { class: "note" }, "No epoch reported yet.")];
  return names.map((name) => {
    const box = h("div", { class: "chart" });
    const mini = h("div", { class: "mini", dataset: { metric: name } }, h("h3", {}, name), box);
    const points = trial.curve.map((p) => [p.epoch, p.metrics[name] ?? null]);
    const curve = {
      trial_id: trial.id,
      number: trial.number,
      state: trial.state,
      best: false,
      points,
    };
    mini.draw = () =>
      drawCurves(
        box,
        { curves: [curve], band: null, metric: name, epochs: trial.epochs },
        { height: 170, focus: trial.id },
      );
    return mini;
  });
}

/** The dialog; open(studyId, number) shows trial `number` of the study; onClose(number) when
 * the user closed it on trial `number` (null: closed by close()); multiFidelity() says whether
 * bracket and rung mean anything for the study. */
export function trialDialog({ onClose, multiFidelity = () => false }) {
  const body = h("div", { class: "dialog-body" });
  const dialog = h("dialog", { id: "trial-dialog", "aria-label": "trial" }, body);
  // The close event comes a task after the close: by then the dialog may be open again on
  // another trial (the address changed meanwhile), and that close is no longer news.
  dialog.addEventListener("close", () => dialog.open || onClose(current ? current.number : null));
  let current = null;

  async function load() {
    if (!current) return;
    const page = await api.table(current.studyId, { q: `#${current.number}`, limit: 1 });
    if (!page.items.length) {
      fill(
        body,
        h("p", { class: "notice" }, `Trial #${current.number} does not exist.`),
        closeButton(),
      );
      return;
    }
    const row = page.items[0];
    current.id = row.id;
    const trial = { ...(await api.trial(row.id)), duration_s: row.duration_s };
    render(trial);
  }

  function closeButton() {
    return h("button", { type: "button", class: "close", onclick: () => dialog.close() }, "Close");
  }

  function render(trial) {
    const minis = metricCharts(trial);
    fill(
      body,
      h(
        "div",
        { class: "dialog-head" },
        h("h2", {}, `Trial #${trial.number}`),
        badge(trial.state),
        closeButton(),
      ),
      h("div", { class: "grid2" }, facts(trial, multiFidelity()), paramsTable(trial)),
      h("div", { class: "minis" }, minis),
    );
    minis.forEach((m) => m.draw && m.draw());
  }

  return {
    el: dialog,
    get trialId() {
      return current ? current.id : null;
    },
    get number() {
      return current ? current.number : null;
    },
    async open(studyId, number) {
      current = { studyId, number, id: null };
      fill(body, h("p", { class: "note" }, `Loading trial #${number}…`));
      if (!dialog.open) dialog.showModal();
      try {
        await load();
      } catch (err) {
        fill(
          body,
          h("p", { class: "notice" }, `Could not load trial #${number}: ${err.message}`),
          closeButton(),
        );
      }
    },
    refresh: load,
    close() {
      current = null;
      if (dialog.open) dialog.close();
    },
  };
}
