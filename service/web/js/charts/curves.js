// Learning curves: one line per trial (best highlighted, pruned faded, failed dashed, running in
// their own colour) over an optional 10-90 % band of all trials, epochs on x.

import { h, num } from "../dom.js";
import { axisX, axisY, frame, linear, padded, pathOf, s } from "./svg.js";

const ORDER = { pruned: 0, failed: 1, completed: 2, paused: 2, queued: 2, running: 3 };

function domainOf(curves, band, epochs) {
  const ys = [];
  let maxEpoch = epochs || 1;
  for (const c of curves) {
    for (const [e, v] of c.points) {
      ys.push(v);
      if (e > maxEpoch) maxEpoch = e;
    }
  }
  if (band) {
    ys.push(...band.low, ...band.high);
    maxEpoch = Math.max(maxEpoch, ...band.epochs);
  }
  return { x: [1, Math.max(2, maxEpoch)], y: padded(ys) };
}

function drawBand(plot, band, x, y) {
  const keep = band.epochs
    .map((e, i) => i)
    .filter((i) => band.low[i] !== null && band.high[i] !== null);
  if (keep.length < 2) return;
  const top = keep.map((i) => [x(band.epochs[i]), y(band.high[i])]);
  const bottom = keep.map((i) => [x(band.epochs[i]), y(band.low[i])]).reverse();
  plot.appendChild(s("path", { class: "band", d: `${pathOf(top)}L${pathOf(bottom).slice(1)}Z` }));
  const median = band.epochs.map((e, i) => [x(e), y(band.median[i])]);
  plot.appendChild(s("path", { class: "median", d: pathOf(median) }));
}

function curveTip(c, metric) {
  const last = c.points.length ? c.points[c.points.length - 1] : null;
  const at = last ? `\n${metric} ${num(last[1])} at epoch ${last[0]}` : "";
  return `Trial #${c.number} · ${c.state}${c.best ? " · best" : ""}${at}`;
}

/**
 * Draw into `container`. data: {curves, band, metric, epochs}; opts: {focus (trial id),
 * onPick(trialId), height, colors (trial id -> CSS colour, one per compared trial)}.
 */
export function drawCurves(container, data, opts = {}) {
  const { curves, band, metric } = data;
  const f = frame(container, { height: opts.height || 280 });
  const dom = domainOf(curves, band, data.epochs);
  const x = linear(dom.x, [0, f.w]);
  const y = linear(dom.y, [f.h, 0]);
  axisY(f.plot, y, f.w, { title: metric });
  axisX(f.plot, x, f.h, { title: "epoch", format: (v) => (Number.isInteger(v) ? String(v) : "") });
  if (band) drawBand(f.plot, band, x, y);
  const sorted = [...curves].sort(
    (a, b) => (ORDER[a.state] ?? 2) - (ORDER[b.state] ?? 2) || Number(a.best) - Number(b.best),
  );
  const normal = [];
  const onTop = [];
  for (const c of sorted) {
    const classes = [
      "curve",
      c.state,
      c.best ? "best" : "",
      c.trial_id === opts.focus ? "focus" : "",
    ];
    const tip = curveTip(c, metric);
    const els = [
      s("path", {
        class: classes.join(" ").trim(),
        d: pathOf(c.points.map(([e, v]) => [x(e), v === null ? NaN : y(v)])),
        "data-trial": c.trial_id,
        "data-number": c.number,
        "data-tip": tip,
        style: opts.colors ? `stroke: ${opts.colors.get(c.trial_id)}` : null,
      }),
    ];
    if (c.points.length === 1 && c.points[0][1] !== null) {
      const [e, v] = c.points[0];
      els.push(
        s("circle", {
          class: `dot ${c.state}`,
          cx: x(e),
          cy: y(v),
          r: 2,
          "data-trial": c.trial_id,
          "data-tip": tip,
        }),
      );
    }
    (c.best || c.trial_id === opts.focus ? onTop : normal).push(...els);
  }
  [...normal, ...onTop].forEach((el) => f.plot.appendChild(el));
  if (opts.onPick) {
    f.svg.addEventListener("click", (event) => {
      const target = event.target.closest("[data-trial]");
      if (target) opts.onPick(Number(target.getAttribute("data-trial")));
    });
  }
  f.svg.setAttribute("aria-label", `learning curves of ${curves.length} trials`);
  container.replaceChildren(f.svg);
  return f.svg;
}

export function curvesLegend(data) {
  const best = data.curves.find((c) => c.best);
  const items = [
    best
      ? h(
          "span",
          {},
          h("span", { class: "key", style: "background: var(--best)" }),
          `best #${best.number}`,
        )
      : null,
    h("span", {}, h("span", { class: "key", style: "background: var(--running)" }), "running"),
    h("span", {}, h("span", { class: "key", style: "background: var(--series)" }), "finished"),
    h(
      "span",
      {},
      h("span", { class: "key", style: "background: var(--pruned); opacity: .4" }),
      "pruned (faded)",
    ),
    data.band
      ? h(
          "span",
          {},
          h("span", { class: "key", style: "background: var(--band); height: .6rem" }),
          `10–90 % of ${data.band.trials.toLocaleString("en-US")} trials`,
        )
      : null,
  ];
  return h("div", { class: "legend" }, items);
}
