// Two or more trials side by side: their facts and params in one table (a row per param, a
// column per trial, differing rows marked) and their learning curves overlaid, one colour each.

import { api } from "../api.js";
import { badge, fill, h, num, scroller, paramText } from "../dom.js";
import { drawCurves } from "../charts/curves.js";

// distinct in light and dark schemes, and for the common colour-vision deficiencies
const COLORS = ["#2a6fdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c"];

async function loadTrial(studyId, number) {
  const page = await api.table(studyId, { q: `#${number}`, limit: 1 });
  if (!page.items.length) throw new Error(`trial #${number} does not exist`);
  return api.trial(page.items[0].id);
}

function sideBySide(trials, colors) {
  const names = [];
  for (const t of trials)
    for (const k of Object.keys(t.params)) if (!names.includes(k)) names.push(k);
  const rows = [
    ["State", (t) => badge(t.state)],
    ["Value", (t) => num(t.value)],
    ["Epochs", (t) => String(t.epochs)],
    ...names.map((k) => [k, (t) => paramText(t.params[k]), true]),
  ];
  return h(
    "table",
    { class: "data", "aria-label": "trials side by side" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Param"),
        trials.map((t) =>
          h(
            "th",
            { class: "wrap" },
            h("span", { class: "key", style: `background: ${colors.get(t.id)}` }),
            `#${t.number}`,
          ),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map(([label, cell, param]) => {
        const texts = trials.map((t) => (param ? paramText(t.params[label]) : null));
        const differs = param && new Set(texts).size > 1;
        return h(
          "tr",
          { dataset: param ? { param: label } : {}, class: differs ? "differs" : null },
          h("th", { scope: "row" }, label),
          trials.map((t) => h("td", { class: "wrap" }, cell(t))),
        );
      }),
    ),
  );
}

/** The dialog: open(studyId, numbers, metric) compares the trials with those numbers. */
export function compareDialog() {
  const body = h("div", { class: "dialog-body" });
  const dialog = h("dialog", { id: "compare-dialog", "aria-label": "compare trials" }, body);
  const close = h(
    "button",
    { type: "button", class: "close", onclick: () => dialog.close() },
    "Close",
  );
  return {
    el: dialog,
    async open(studyId, numbers, metric) {
      fill(
        body,
        h("p", { class: "note" }, `Loading trials ${numbers.map((n) => `#${n}`).join(", ")}…`),
      );
      if (!dialog.open) dialog.showModal();
      let trials;
      try {
        trials = await Promise.all(numbers.map((n) => loadTrial(studyId, n)));
      } catch (err) {
        fill(body, h("p", { class: "notice" }, `Could not compare: ${err.message}`), close);
        return;
      }
      const colors = new Map(trials.map((t, i) => [t.id, COLORS[i % COLORS.length]]));
      const box = h("div", { class: "chart", dataset: { chart: "compare" } });
      fill(
        body,
        h("div", { class: "dialog-head" }, h("h2", {}, `Comparing ${trials.length} trials`), close),
        scroller("trials side by side", sideBySide(trials, colors)),
        h("h3", {}, metric),
        box,
      );
      const curves = trials.map((t) => ({
        trial_id: t.id,
        number: t.number,
        state: t.state,
        value: t.value,
        best: false,
        points: t.curve.map((p) => [p.epoch, p.metrics[metric] ?? null]),
      }));
      const epochs = Math.max(...trials.map((t) => t.epochs));
      drawCurves(box, { curves, band: null, metric, epochs }, { height: 240, colors });
    },
    close() {
      if (dialog.open) dialog.close();
    },
  };
}
