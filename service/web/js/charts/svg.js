// Small SVG toolkit for the page's charts: elements, scales, ticks, axes and a colour ramp.

import { num } from "../dom.js";

const NS = "http://www.w3.org/2000/svg";

/** s("path", {d, class}, ...children): an SVG element; string children become text. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Finite [min, max] of values (a small span around a single value; [0, 1] for none). */
export function extent(values) {
  return span(values, 0);
}

/** extent() widened by `pad` of its width on both sides, so that no mark sits on an axis. */
export function padded(values, pad = 0.04) {
  return span(values, pad);
}

function span(values, pad) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v === null || v === undefined || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) {
    const half = Math.abs(lo) * 0.05 || 0.5;
    return [lo - half, hi + half];
  }
  const extra = (hi - lo) * pad;
  return [lo - extra, hi + extra];
}

/** About `n` round tick values covering [lo, hi]. */
export function ticks(lo, hi, n = 5) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / n;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((x) => x >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

export function linear([d0, d1], [r0, r1]) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  const scale = (v) => r0 + (v - d0) * k;
  scale.ticks = (n) => ticks(d0, d1, n);
  scale.domain = [d0, d1];
  return scale;
}

export function log([d0, d1], [r0, r1]) {
  const l0 = Math.log10(d0);
  const l1 = Math.log10(d1);
  const k = l1 === l0 ? 0 : (r1 - r0) / (l1 - l0);
  const scale = (v) => (v > 0 ? r0 + (Math.log10(v) - l0) * k : NaN);
  scale.ticks = () => {
    const out = [];
    for (let p = Math.ceil(l0); p <= Math.floor(l1); p += 1) out.push(10 ** p);
    return out.length >= 2 ? out : [d0, d1];
  };
  scale.domain = [d0, d1];
  return scale;
}

/** Evenly spaced positions for categories, with half a step of padding at both ends. */
export function points(values, [r0, r1]) {
  const step = (r1 - r0) / Math.max(1, values.length);
  const index = new Map(values.map((v, i) => [JSON.stringify(v), i]));
  const scale = (v) => {
    const i = index.get(JSON.stringify(v));
    return i === undefined ? NaN : r0 + step * (i + 0.5);
  };
  scale.ticks = () => values;
  scale.domain = values;
  return scale;
}

/** A chart frame: an <svg> sized to the container's width, and the plot area inside margins. */
export function frame(container, { height = 260, margin = {} } = {}) {
  const m = { top: 10, right: 16, bottom: 34, left: 56, ...margin };
  const width = Math.max(240, Math.floor(container.clientWidth || 600));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, height, role: "img" });
  const plot = s("g", { transform: `translate(${m.left},${m.top})` });
  svg.appendChild(plot);
  return { svg, plot, width, height, w: width - m.left - m.right, h: height - m.top - m.bottom, m };
}

/** Left axis with grid lines across the plot width `w`. */
export function axisY(plot, scale, w, { title, format = num, n = 5 } = {}) {
  const g = s("g", { class: "axis" });
  for (const t of scale.ticks(n)) {
    const y = scale(t);
    if (!Number.isFinite(y)) continue;
    g.appendChild(s("line", { class: "gridline", x1: 0, x2: w, y1: y, y2: y }));
    g.appendChild(
      s("text", { x: -6, y, "text-anchor": "end", "dominant-baseline": "middle" }, format(t)),
    );
  }
  if (title) {
    const [r0, r1] = [scale(scale.domain[0]), scale(scale.domain[1])];
    const mid = (r0 + r1) / 2;
    g.appendChild(
      s(
        "text",
        {
          class: "axis-title",
          transform: `translate(-44,${mid}) rotate(-90)`,
          "text-anchor": "middle",
        },
        title,
      ),
    );
  }
  plot.appendChild(g);
}

/** Bottom axis at height `h`. */
export function axisX(plot, scale, h, { title, format = num, n = 6 } = {}) {
  const g = s("g", { class: "axis" });
  g.appendChild(
    s("line", { x1: scale(scale.domain[0]), x2: scale(scale.domain[1]), y1: h, y2: h }),
  );
  for (const t of scale.ticks(n)) {
    const x = scale(t);
    if (!Number.isFinite(x)) continue;
    g.appendChild(s("line", { x1: x, x2: x, y1: h, y2: h + 4 }));
    g.appendChild(s("text", { x, y: h + 16, "text-anchor": "middle" }, format(t)));
  }
  if (title) {
    const mid = (scale(scale.domain[0]) + scale(scale.domain[1])) / 2;
    g.appendChild(
      s("text", { class: "axis-title", x: mid, y: h + 30, "text-anchor": "middle" }, title),
    );
  }
  plot.appendChild(g);
}

/** A path through points [[x, y], ...]; a non-finite y breaks the line. */
export function pathOf(pts) {
  let d = "";
  let pen = false;
  for (const [x, y] of pts) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

// Objective colours, worst to best: readable on light and dark backgrounds alike.
const RAMP = [
  [96, 112, 200],
  [46, 160, 170],
  [120, 190, 80],
  [245, 166, 35],
  [232, 89, 12],
];

/** Colour for t in [0, 1] (1: the best). */
export function ramp(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const c = RAMP[i].map((a, k) => Math.round(a + (RAMP[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export function rampGradient() {
  return `linear-gradient(to right, ${RAMP.map((c) => `rgb(${c.join(",")})`).join(", ")})`;
}

/** Map objective values to [0, 1] by rank, 1 the best for the direction: colours spread evenly
 * however skewed the values are. */
export function goodness(values, maximize) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  const n = sorted.length;
  return (v) => {
    if (n < 2) return 1;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    const t = lo / (n - 1);
    return maximize ? t : 1 - t;
  };
}

/** Redraw `draw()` whenever the container's width changes. Returns a disconnect function. */
export function onResize(container, draw) {
  let width = container.clientWidth;
  let frameId = null;
  const observer = new ResizeObserver(() => {
    if (container.clientWidth === width) return;
    width = container.clientWidth;
    cancelAnimationFrame(frameId);
    frameId = requestAnimationFrame(draw);
  });
  observer.observe(container);
  return () => observer.disconnect();
}
