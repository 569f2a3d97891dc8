// The chart panels of a study page. Each keeps the last data it drew, so that events can change
// it in place (a reported epoch, a finished trial) between reloads from the server.

import { count, counted, h, num, scroller } from "../dom.js";
import { drawBars } from "../charts/bars.js";
import { curvesLegend, drawCurves } from "../charts/curves.js";
import { drawHistory } from "../charts/history.js";
import { drawParallel } from "../charts/parallel.js";
import { onResize, rampGradient } from "../charts/svg.js";

export const CURVE_LIMIT = 100;

/** A User Timing mark `hpo:chart:<name>` when a chart is first drawn on this page (a documented
 * feature, docs/web.md: the dashboard benchmark and any profiler read them). */
function markDrawn(name) {
  const mark = `hpo:chart:${name}`;
  if (!performance.getEntriesByName(mark, "mark").length) performance.mark(mark);
}

/** A panel with a title, a note, optional controls, a chart box and a footer. */
export function panel(name, title, controls = []) {
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
      p.empty(data.basis ? "No trial has reached the first rung yet." : "No completed trial yet.");
      return;
    }
    const shown = data.lines.length;
    const noun = data.basis ? "trial" : "completed trial";
    p.note.textContent =
      (shown < data.total
        ? `${count(shown)} of ${counted(data.total, noun)}`
        : counted(shown, noun)) + (data.basis ? `: ${data.basis}` : "");
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
    const noun = data.basis ? "trial" : "completed trial";
    p.note.textContent =
      `${data.evaluator} over ${counted(data.trials, noun)}` +
      (data.basis ? `: ${data.basis}` : "");
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

/** Successive halving and Hyperband, per rung: its epochs, the trials trained to it (at it now or
 * promoted past it), how many were promoted, the best value at its epoch and what is training
 * there now. A row (click, Enter or Space) lists every trial that reached the rung. */
export function rungsPanel({ onPick }) {
  const head = h("tr");
  const body = h("tbody");
  const el = h(
    "section",
    { class: "panel", id: "panel-rungs", "aria-label": "rungs" },
    h(
      "div",
      { class: "panel-head" },
      h("h2", {}, "Brackets and rungs"),
      h("span", { class: "note" }, "open a rung to list every trial that reached it"),
    ),
    scroller("rungs table", h("table", { class: "data" }, h("thead", {}, head), body)),
  );
  const render = (groups) => {
    const brackets = new Set(groups.map((g) => g.bracket)).size > 1;
    const columns = [
      ...(brackets ? [["Bracket", (g) => String(g.bracket)]] : []),
      ["Rung", (g) => String(g.rung)],
      ["Epochs", (g) => String(g.epochs ?? "—")],
      ["Trained to it", (g) => String(g.trained ?? "—")],
      ["Promoted", (g) => String(g.promoted ?? "—")],
      ["Best at its epoch", (g) => num(g.best)],
      ["Training now", (g) => String(g.counts.running + g.counts.queued)],
      ["Paused", (g) => String(g.counts.paused)],
    ];
    head.replaceChildren(...columns.map(([label]) => h("th", { class: "num" }, label)));
    body.replaceChildren(
      ...groups.map((g) => {
        const open = () => onPick(g.bracket, g.rung);
        const name = `${brackets ? `bracket ${g.bracket}, ` : ""}rung ${g.rung}`;
        return h(
          "tr",
          {
            class: "clickable",
            tabindex: 0,
            "aria-label": `${name}: list the ${counted(g.trained ?? 0, "trial")} trained to it`,
            dataset: { bracket: g.bracket, rung: g.rung },
            onclick: open,
            onkeydown: (e) => {
              if (e.key === "Enter" || e.key === " ") {
                e.preventDefault();
                open();
              }
            },
          },
          columns.map(([label, cell]) =>
            h("td", { class: "num", dataset: { col: label } }, cell(g)),
          ),
        );
      }),
    );
  };
  return { el, render };
}
