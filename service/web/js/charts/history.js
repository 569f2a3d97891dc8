// Optimization history: the objective of each finished trial by number, pruned ones faded, and
// the best-so-far as a step line.

import { num } from "../dom.js";
import { axisX, axisY, frame, linear, padded, pathOf, s } from "./svg.js";

/** data: {points: [[number, value, state]], best: [[number, value]], metric}; opts.onPick. */
export function drawHistory(container, data, opts = {}) {
  const f = frame(container, { height: opts.height || 280 });
  const numbers = data.points.map((p) => p[0]);
  const lastNumber = Math.max(1, ...numbers, ...(data.best || []).map((b) => b[0]));
  const x = linear([0, lastNumber], [0, f.w]);
  const y = linear(padded(data.points.map((p) => p[1])), [f.h, 0]);
  axisY(f.plot, y, f.w, { title: data.metric });
  axisX(f.plot, x, f.h, { title: "trial", format: (v) => (Number.isInteger(v) ? String(v) : "") });
  const bestNumbers = new Set((data.best || []).map((b) => b[0]));
  const dots = s("g");
  const r = data.points.length > 1000 ? 1.6 : 2.6;
  for (const [number, value, state] of data.points) {
    if (value === null) continue;
    const best = bestNumbers.has(number);
    dots.appendChild(
      s("circle", {
        class: `dot ${state}${best ? " best" : ""}`,
        cx: x(number).toFixed(1),
        cy: y(value).toFixed(1),
        r: best ? r + 1 : r,
        "data-number": number,
        "data-tip": `Trial #${number} · ${state}\n${data.metric} ${num(value)}`,
      }),
    );
  }
  f.plot.appendChild(dots);
  if (data.best && data.best.length) {
    const steps = [];
    data.best.forEach(([number, value], i) => {
      if (i > 0) steps.push([x(number), y(data.best[i - 1][1])]);
      steps.push([x(number), y(value)]);
    });
    steps.push([x(lastNumber), y(data.best[data.best.length - 1][1])]);
    f.plot.appendChild(s("path", { class: "steps", d: pathOf(steps) }));
  }
  if (opts.onPick) {
    f.svg.addEventListener("click", (event) => {
      const target = event.target.closest("[data-number]");
      if (target) opts.onPick(Number(target.getAttribute("data-number")));
    });
  }
  f.svg.setAttribute("aria-label", `optimization history of ${data.points.length} trials`);
  container.replaceChildren(f.svg);
  return f.svg;
}
