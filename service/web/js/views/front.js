// The Pareto front panel of a multi-objective study: its completed trials by their first two
// objectives, the study's `best` (its Pareto set) marked and joined.

import { api } from "../api.js";
import { counted, h } from "../dom.js";
import { drawFront } from "../charts/front.js";
import { panel } from "./panels.js";

const PAGE = 1000;

/** Every trial of study `id`, a page of the API at a time. */
async function allTrials(id) {
  const trials = [];
  let after = null;
  do {
    const page = await api.get(`/api/v1/studies/${id}/trials`, { limit: PAGE, after });
    trials.push(...page.items);
    after = page.next;
  } while (after !== null);
  return trials;
}

/** onPick(number). Returns the panel with load(study): read its trials and draw the front. */
export function frontPanel({ onPick }) {
  const p = panel("front", "Pareto front");
  p.load = async (study) => {
    const objectives = study.spec.objectives;
    const front = (study.best || []).map((b) => b.number);
    const points = (await allTrials(study.id))
      .filter((t) => t.state === "completed" && t.values)
      .filter((t) => t.values.slice(0, 2).every(Number.isFinite))
      .map((t) => ({ number: t.number, values: t.values }));
    if (!points.length) {
      p.empty("No completed trial yet.");
      p.foot.replaceChildren();
      return;
    }
    p.show({ objectives, points, front }, (d) => {
      p.note.textContent = `${counted(d.front.length, "trial")} on the front of ${counted(
        d.points.length,
        "completed trial",
      )}`;
      drawFront(p.box, d, { onPick });
    });
    p.foot.replaceChildren(
      h(
        "div",
        { class: "legend" },
        h(
          "span",
          {},
          h("span", { class: "key", style: "background: var(--best)" }),
          "Pareto front",
        ),
        h("span", {}, h("span", { class: "key", style: "background: var(--series)" }), "completed"),
      ),
    );
  };
  return p;
}
