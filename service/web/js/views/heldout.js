// A completed trial's held-out test score as the best panel and the trial dialog show it: its
// final model's accuracy and loss on the test split, evaluated once when it completed and never
// used to choose anything (so it is no sortable column anywhere); or why there is none.

import { h, num } from "../dom.js";

export const HELD_OUT_LABEL = "held-out test, never used for selection";

/** The score in words, "test_accuracy 0.965 · test_loss 0.1235" or "no score: <why>"; null
 * when the trial has none (not completed, or trained by an older worker). */
export function heldOutScore(testMetrics) {
  if (!testMetrics) return null;
  if (testMetrics.unavailable !== undefined) return `no score: ${testMetrics.unavailable}`;
  const { test_accuracy: accuracy, test_loss: loss } = testMetrics;
  return `test_accuracy ${num(accuracy)} · test_loss ${num(loss)}`;
}

/** The label and the score as one element with `id`, or null when there is no score. */
export function heldOut(testMetrics, id) {
  const score = heldOutScore(testMetrics);
  if (score === null) return null;
  return h(
    "span",
    { class: "held-out", id },
    h("span", { class: "note" }, `${HELD_OUT_LABEL}:`),
    " ",
    h("b", { dataset: { heldOut: "" } }, score),
  );
}
