// The Pareto front of a multi-objective study: every completed trial as a point of its first two
// objectives, the front's trials marked and joined in the order of the first objective.

import { num } from "../dom.js";
import { axisX, axisY, frame, linear, padded, pathOf, s } from "./svg.js";

/**
 * data: {objectives: [{metric, direction}, ...], points: [{number, values}], front: [number]};
 * opts.onPick(number). Draws the first two objectives (a third one is in each point's tip).
 */
export function drawFront(container, data, opts = {}) {
  const f = frame(container, { height: opts.height || 280 });
  const [first, second] = data.objectives;
  const title = (o) => `${o.metric} (${o.direction === "maximize" ? "higher" : "lower"} is better)`;
  const x = linear(padded(data.points.map((p) => p.values[0])), [0, f.w]);
  const y = linear(padded(data.points.map((p) => p.values[1])), [f.h, 0]);
  axisY(f.plot, y, f.w, { title: title(second) });
  axisX(f.plot, x, f.h, { title: title(first) });
  const onFront = new Set(data.front);
  const frontPoints = data.points
    .filter((p) => onFront.has(p.number))
    .sort((a, b) => a.values[0] - b.values[0] || a.values[1] - b.values[1]);
  f.plot.appendChild(
    s("path", {
      class: "steps front-line",
      d: pathOf(frontPoints.map((p) => [x(p.values[0]), y(p.values[1])])),
    }),
  );
  const dots = s("g");
  for (const p of data.points) {
    const front = onFront.has(p.number);
    const values = data.objectives.map((o, i) => `${o.metric} ${num(p.values[i])}`).join("\n");
    dots.appendChild(
      s("circle", {
        class: `dot${front ? " best front" : ""}`,
        cx: x(p.values[0]).toFixed(1),
        cy: y(p.values[1]).toFixed(1),
        r: front ? 4 : 2.8,
        "data-number": p.number,
        "data-tip": `Trial #${p.number}${front ? " · on the Pareto front" : ""}\n${values}`,
      }),
    );
  }
  f.plot.appendChild(dots);
  if (opts.onPick) {
    f.svg.addEventListener("click", (event) => {
      const target = event.target.closest("[data-number]");
      if (target) opts.onPick(Number(target.getAttribute("data-number")));
    });
  }
  f.svg.setAttribute(
    "aria-label",
    `Pareto front: ${frontPoints.length} of ${data.points.length} completed trials`,
  );
  container.replaceChildren(f.svg);
  return f.svg;
}
