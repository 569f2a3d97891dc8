// Parallel coordinates: one vertical axis per parameter (numeric, log or categorical) plus the
// objective, one line per trial coloured by its objective (best brightest). A parameter that was
// inactive for a trial (a conditional one) breaks its line at that axis.

import { num, paramText } from "../dom.js";
import { extent, goodness, linear, log, pathOf, points, ramp, s } from "./svg.js";

function axisScale(axis, lines, index, range) {
  if (axis.kind === "categorical") return points(axis.choices || [], range);
  const seen = lines.map((l) => l.values[index]).filter((v) => typeof v === "number");
  let [lo, hi] = axis.low !== null && axis.high !== null ? [axis.low, axis.high] : extent(seen);
  if (lo === hi) [lo, hi] = extent([lo]);
  if (axis.log && lo > 0) return log([lo, hi], range);
  return linear([lo, hi], range);
}

function drawAxis(plot, axis, scale, x, h) {
  const g = s("g", { class: "pc-axis" });
  g.appendChild(s("line", { x1: x, x2: x, y1: 0, y2: h }));
  const labels = axis.kind === "categorical" ? scale.ticks() : scale.ticks(4);
  for (const t of labels) {
    const y = scale(t);
    if (!Number.isFinite(y)) continue;
    g.appendChild(s("line", { x1: x - 3, x2: x, y1: y, y2: y }));
    g.appendChild(
      s("text", { x: x - 5, y, "text-anchor": "end", "dominant-baseline": "middle" }, paramText(t)),
    );
  }
  const name = axis.name.length > 16 ? `${axis.name.slice(0, 15)}…` : axis.name;
  g.appendChild(
    s(
      "text",
      { class: "pc-label", x, y: -10, "text-anchor": "middle", "data-tip": axis.name },
      name,
    ),
  );
  plot.appendChild(g);
}

/** data: {axes, lines: [{number, value, values}], metric, direction}; opts.onPick(number). */
export function drawParallel(container, data, opts = {}) {
  const height = opts.height || 300;
  const m = { top: 28, right: 40, bottom: 12, left: 64 };
  const width = Math.max(320, Math.floor(container.clientWidth || 600));
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, height, role: "img" });
  const plot = s("g", { transform: `translate(${m.left},${m.top})` });
  svg.appendChild(plot);
  const objective = { name: data.metric, kind: "numeric", low: null, high: null, log: false };
  const axes = [...data.axes, objective];
  const step = w / Math.max(1, axes.length - 1);
  const lines = data.lines.map((l) => ({ ...l, values: [...l.values, l.value] }));
  const scales = axes.map((axis, i) => axisScale(axis, lines, i, [h, 0]));
  const good = goodness(
    data.lines.map((l) => l.value),
    data.direction === "maximize",
  );
  const ordered = [...lines].sort((a, b) => good(a.value) - good(b.value));
  const group = s("g");
  ordered.forEach((line, k) => {
    const pts = line.values.map((v, i) => [
      i * step,
      v === null || v === undefined ? NaN : scales[i](v),
    ]);
    const best = k === ordered.length - 1;
    const tip = [`Trial #${line.number} · ${data.metric} ${num(line.value)}`]
      .concat(data.axes.map((a, i) => `${a.name} = ${paramText(line.values[i])}`))
      .join("\n");
    group.appendChild(
      s("path", {
        class: `pc-line${best ? " best" : ""}`,
        d: pathOf(pts),
        stroke: ramp(good(line.value)),
        "data-number": line.number,
        "data-tip": tip,
      }),
    );
  });
  plot.appendChild(group);
  axes.forEach((axis, i) => drawAxis(plot, axis, scales[i], i * step, h));
  if (opts.onPick) {
    svg.addEventListener("click", (event) => {
      const target = event.target.closest("[data-number]");
      if (target) opts.onPick(Number(target.getAttribute("data-number")));
    });
  }
  svg.setAttribute("aria-label", `parallel coordinates of ${data.lines.length} trials`);
  container.replaceChildren(svg);
  return svg;
}
