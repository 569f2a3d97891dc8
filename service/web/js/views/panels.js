// The chart panels of a study page. Each keeps the last data it drew, so that events can change
// it in place (a reported epoch, a finished trial) between reloads from the server.

import { count, counted, h, num } from "../dom.js";
import { drawBars } from "../charts/bars.js";
import { curvesLegend, drawCurves } from "../charts/curves.js";
import { drawHistory } from "../charts/history.js";
import { drawParallel } from "../charts/parallel.js";
import { onResize, rampGradient } from "../charts/svg.js";

export const CURVE_LIMIT = 100;

function markDrawn(name) {
  const t = window.hpoTimings;
  const now = performance.now();
  if (t.firstChart === undefined) t.firstChart = now;
  if (t.panels[name] === undefined) t.panels[name] = now;
}

/** A panel with a title, a note, optional controls, a chart box and a footer. */
function panel(name, title, controls = []) {
  const note = h("span", { class: "note" });
  const box = h(
    "div",
    { class: "chart", dataset: { chart: name } },
    h("p", { class: "empty" }, "Loading…"),
  );
  const foot = h("div");
  const el = h(
    "section",
    { class: "panel", id: `panel-${name}`, "aria-label": title },
    h("div", { class: "panel-head" }, h("h2", {}, title), controls, note),
    box,
    foot,
  );
  let data = null;
  let drawer = null;
  let frameId = null;
  const draw = () => {
    frameId = null;
    if (data && drawer) drawer(data);
  };
  const stopResize = onResize(box, draw);
  return {
    el,
    note,
    box,
    foot,
    get data() {
      return data;
    },
    /** Show `next` with `fn(data)` now. */
    show(next, fn) {
      data = next;
      drawer = fn;
      draw();
      markDrawn(name);
    },
    /** Redraw (chart, note, legend) on the next animation frame after in-place changes. */
    redraw() {
      if (frameId === null) frameId = requestAnimationFrame(draw);
    },
    empty(text) {
      data = null;
      box.replaceChildren(h("p", { class: "empty" }, text));
    },
    close: stopResize,
  };
}

export function curvesPanel({ onPick, onMetric }) {
  const select = h("select", {
    name: "metric",
    "aria-label": "metric",
    onchange: () => onMetric(select.value),
  });
  const p = panel("curves", "Learning curves", [select]);
  p.setMetrics = (names, current) => {
    const known = [...select.options].map((o) => o.value);
    if (known.join("\n") === names.join("\n") && select.value === current) return;
    select.replaceChildren(
      ...names.map((n) => h("option", { value: n, selected: n === current }, n)),
    );
  };
  p.render = (data, focus) => {
    if (!data.curves.length) {
      p.empty("No epoch reported yet.");
      p.foot.replaceChildren();
      return;
    }
    p.show(data, (d) => {
      const shown = d.curves.length;
      p.note.textContent =
        shown < d.total
          ? `${count(shown)} of ${counted(d.total, "trial")} drawn`
          : counted(shown, "trial");
      drawCurves(p.box, d, { onPick, focus });
      p.foot.replaceChildren(curvesLegend(d));
    });
  };
  return p;
}

export function historyPanel({ onPick }) {
  const p = panel("history", "Optimization history");
  p.render = (data) => {
    if (!data.points.length) {
      p.empty("No trial has finished yet.");
      return;
    }
    p.show(data, (d) => {
      const shown = d.points.length;
      p.note.textContent =
        shown < d.total
          ? `${count(shown)} of ${counted(d.total, "finished trial")}`
          : counted(shown, "finished trial");
      drawHistory(p.box, d, { onPick });
    });
    p.foot.replaceChildren(
      h(
        "div",
        { class: "legend" },
        h("span", {}, h("span", { class: "key", style: "background: var(--best)" }), "best so far"),
        h("span", {}, h("span", { class: "key", style: "background: var(--series)" }), "completed"),
        h(
          "span",
          {},
          h("span", { class: "key", style: "background: var(--pruned); opacity: .5" }),
          "pruned",
        ),
      ),
    );
  };
  return p;
}

export function parallelPanel({ onPick }) {
  const p = panel("parallel", "Parallel coordinates");
  p.render = (data) => {
    if (!data.lines.length) {
      p.empty("No completed trial yet.");
      return;
    }
    const shown = data.lines.length;
    p.note.textContent =
      shown < data.total
        ? `${count(shown)} of ${counted(data.total, "completed trial")}`
        : counted(shown, "completed trial");
    p.show(data, (d) => drawParallel(p.box, d, { onPick }));
    p.foot.replaceChildren(
      h(
        "div",
        { class: "legend" },
        h(
          "span",
          {},
          `${data.metric}: worse`,
          h("span", { class: "colorbar", style: `background: ${rampGradient()}` }),
          "better",
        ),
      ),
    );
  };
  return p;
}

export function importancePanel() {
  const p = panel("importance", "Parameter importance");
  p.render = (data) => {
    p.note.textContent = `${data.evaluator} over ${counted(data.trials, "completed trial")}`;
    if (!data.importances.length) {
      p.empty(data.note ? `No importance yet: ${data.note}.` : "No importance yet.");
      return;
    }
    p.show(data, (d) =>
      drawBars(
        p.box,
        d.importances.map(([name, v]) => [name, v ?? 0]),
      ),
    );
  };
  return p;
}

/** Trials per bracket and rung (successive halving, Hyperband); a row filters the table. */
export function rungsPanel({ onPick }) {
  const body = h("tbody");
  const el = h(
    "section",
    { class: "panel", id: "panel-rungs", "aria-label": "rungs" },
    h(
      "div",
      { class: "panel-head" },
      h("h2", {}, "Brackets and rungs"),
      h("span", { class: "note" }, "click a rung to list its trials"),
    ),
    h(
      "div",
      { class: "scroll-x" },
      h(
        "table",
        { class: "data" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Bracket", "Rung", "Running", "Paused", "Completed", "Pruned", "Failed", "Best"].map(
              (t) => h("th", {}, t),
            ),
          ),
        ),
        body,
      ),
    ),
  );
  const render = (groups) => {
    body.replaceChildren(
      ...groups.map((g) =>
        h(
          "tr",
          {
            class: "clickable",
            dataset: { bracket: g.bracket, rung: g.rung },
            onclick: () => onPick(g.bracket, g.rung),
          },
          [
            g.bracket,
            g.rung,
            g.counts.running + g.counts.queued,
            g.counts.paused,
            g.counts.completed,
            g.counts.pruned,
            g.counts.failed,
          ].map((v) => h("td", { class: "num" }, String(v))),
          h("td", { class: "num" }, num(g.best)),
        ),
      ),
    );
  };
  return { el, render };
}
