// Horizontal bars: parameter importance, largest first.

import { s } from "./svg.js";

/** rows: [[label, share in 0..1]]. */
export function drawBars(container, rows) {
  const barH = 22;
  const gap = 8;
  const left = Math.min(160, 12 + 7 * Math.max(4, ...rows.map(([label]) => label.length)));
  const width = Math.max(280, Math.floor(container.clientWidth || 500));
  const height = rows.length * (barH + gap) + gap;
  const room = width - left - 60;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, height, role: "img" });
  rows.forEach(([label, share], i) => {
    const y = gap + i * (barH + gap);
    const pct = `${(share * 100).toFixed(1)} %`;
    const g = s("g", { "data-param": label, "data-tip": `${label}: ${pct} of the importance` });
    const shown = label.length > 22 ? `${label.slice(0, 21)}…` : label;
    g.appendChild(
      s(
        "text",
        {
          class: "bar-label",
          x: left - 8,
          y: y + barH / 2,
          "text-anchor": "end",
          "dominant-baseline": "middle",
        },
        shown,
      ),
    );
    g.appendChild(
      s("rect", {
        class: "bar",
        x: left,
        y,
        width: Math.max(1, share * room),
        height: barH,
        rx: 3,
      }),
    );
    g.appendChild(
      s(
        "text",
        { x: left + Math.max(1, share * room) + 6, y: y + barH / 2, "dominant-baseline": "middle" },
        pct,
      ),
    );
    svg.appendChild(g);
  });
  svg.setAttribute("aria-label", `importance of ${rows.length} parameters`);
  container.replaceChildren(svg);
  return svg;
}
