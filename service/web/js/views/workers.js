// The workers panel: each worker process (a slot of an `hpo worker` command on a device), what it
// trains, and how long ago it was last heard from; workers past the server's stale limit are
// flagged.

import { api } from "../api.js";
import { ago, h, scroller } from "../dom.js";

const SHOWN_TRIALS = 3;

function trialCell(worker, studyNames) {
  if (!worker.trials.length) return h("span", { class: "note" }, "idle");
  const more = worker.trials.length - SHOWN_TRIALS;
  return [
    worker.trials
      .slice(0, SHOWN_TRIALS)
      .map((t, i) => [
        i ? ", " : "",
        h(
          "a",
          { href: `#/studies/${t.study_id}/trials/${t.number}` },
          `${studyNames.get(t.study_id) || `study ${t.study_id}`} #${t.number}`,
        ),
        ` · epoch ${t.epoch}`,
      ]),
    more > 0 ? ` and ${more} more` : "",
  ];
}

// "cpu", "cpu #1 of 2" for a command's slot, "cuda:0 × 8" for a worker that fuses trials.
function deviceText(worker) {
  const slot = worker.slots > 1 ? ` #${worker.slot} of ${worker.slots}` : "";
  return `${worker.device}${slot}${worker.fuse > 1 ? ` × ${worker.fuse}` : ""}`;
}

function row(worker, studyNames) {
  const state = worker.stale
    ? h("span", { class: "badge stale", title: "no heartbeat within the server's limit" }, "stale")
    : h(
        "span",
        { class: `badge state-${worker.state === "active" ? "running" : "pruned"}` },
        worker.state,
      );
  return h(
    "tr",
    { dataset: { worker: worker.name }, class: worker.stale ? "stale-row" : null },
    h("td", { class: "name" }, worker.name),
    h("td", {}, worker.host || "—"),
    h(
      "td",
      {
        class: "mono",
        dataset: { slot: worker.slot },
        title: "#: its slot of its command's on the device (--slots); × K: trials fused (--fuse)",
      },
      deviceText(worker),
    ),
    h("td", {}, state),
    h("td", { class: "wrap" }, trialCell(worker, studyNames)),
    h(
      "td",
      { class: "num", dataset: { age: worker.heartbeat_age_s } },
      ago(worker.heartbeat_age_s),
    ),
  );
}

/** The panel; refresh(studyNames) reloads the list (studyNames: Map of study id to name). */
export function workersPanel() {
  const body = h("tbody");
  const note = h("span", { class: "note" });
  const el = h(
    "section",
    { class: "panel", id: "workers", "aria-label": "workers" },
    h("div", { class: "panel-head" }, h("h2", {}, "Workers"), note),
    scroller(
      "workers table",
      h(
        "table",
        { class: "data" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Worker", "Host", "Device", "State", "Training", "Last heartbeat"].map((t) =>
              h("th", {}, t),
            ),
          ),
        ),
        body,
      ),
    ),
  );
  async function refresh(studyNames = new Map()) {
    const workers = await api.workers();
    const stale = workers.filter((w) => w.stale).length;
    note.textContent = `${workers.length} registered${stale ? `, ${stale} stale` : ""}`;
    body.replaceChildren(
      ...(workers.length
        ? workers.map((w) => row(w, studyNames))
        : [
            h(
              "tr",
              {},
              h(
                "td",
                { colspan: 6, class: "empty" },
                "No worker yet: start one with hpo worker --server URL",
              ),
            ),
          ]),
    );
  }
  return { el, refresh };
}
