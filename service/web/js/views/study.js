// A study's page: header (state, counts, best, stop / resume), charts, rungs, the trial table and
// the trial dialog, kept live by the study's event stream. Events change what they can in place
// (a reported epoch extends its curve, a finished trial joins the history) and ask the panels'
// refreshers to reload from the server, which they do at most every few seconds.

import { api } from "../api.js";
import { EventFollower } from "../events.js";
import { Refresher } from "../refresh.js";
import { STATES, badge, count, crumbs, h, num, paramText } from "../dom.js";
import {
  CURVE_LIMIT,
  curvesPanel,
  historyPanel,
  importancePanel,
  parallelPanel,
  rungsPanel,
} from "./panels.js";
import { applyFinished, applyReport } from "./live.js";
import { frontPanel } from "./front.js";
import { trialTable } from "./table.js";
import { trialDialog } from "./trial.js";
import { heldOut } from "./heldout.js";
import { compareDialog } from "./compare.js";
import { cloneStudy, confirmDelete, editBudget, showSpec } from "./actions.js";

const MULTI_FIDELITY = ["successive_halving", "hyperband"];

function header(onAction) {
  const title = h("h1", { id: "study-name", tabindex: -1 });
  const state = h("span", { id: "study-state" });
  const live = h("span", { class: "live", id: "live", "data-status": "connecting" }, "connecting");
  const stop = h(
    "button",
    { type: "button", class: "danger", id: "stop", onclick: () => onAction("stop") },
    "Stop",
  );
  const resume = h(
    "button",
    { type: "button", id: "resume", onclick: () => onAction("resume") },
    "Resume",
  );
  const message = h("span", { class: "note", role: "alert" });
  const more = [
    ["spec", "Spec"],
    ["clone", "Clone"],
    ["budget", "Budget…"],
    ["delete", "Delete…"],
  ].map(([action, label]) =>
    h(
      "button",
      {
        type: "button",
        class: action === "delete" ? "danger ghost" : "ghost",
        dataset: { action },
        onclick: () => onAction(action),
      },
      label,
    ),
  );
  // Plain links: the browser downloads with the page's session cookie
  const downloads = ["csv", "jsonl"].map((format) =>
    h(
      "a",
      { class: "download", download: true, dataset: { download: format } },
      `Trials .${format}`,
    ),
  );
  const counts = h("div", { class: "chips", id: "counts" });
  const about = h("div", { class: "note" });
  const best = h("div", { class: "best", id: "best" });
  const el = h(
    "section",
    { class: "panel study-head", "aria-label": "study" },
    h(
      "div",
      { class: "study-title" },
      title,
      state,
      h("div", { class: "actions" }, message, live, stop, resume),
    ),
    h(
      "div",
      { class: "actions more", "aria-label": "more actions", role: "group" },
      more,
      downloads,
    ),
    about,
    counts,
    best,
  );
  function render(study) {
    title.textContent = study.name;
    state.replaceChildren(badge(study.state));
    stop.disabled = study.state !== "running";
    resume.disabled = study.state !== "stopped";
    for (const link of downloads) {
      link.href = `/api/v1/studies/${study.id}/trials.${link.dataset.download}`;
    }
    const spec = study.spec;
    const finished = study.counts.completed + study.counts.pruned + study.counts.failed;
    about.textContent = [
      spec.strategy.kind,
      (spec.objectives || [spec.objective]).map((o) => `${o.direction} ${o.metric}`).join(", "),
      `${spec.workload.model} on ${spec.workload.dataset}`,
      `${count(finished)} of ${count(study.max_trials)} trials finished`,
      study.reason,
    ]
      .filter(Boolean)
      .join(" · ");
    counts.replaceChildren(
      ...STATES.map((s) =>
        h(
          "span",
          { class: `chip state-${s}`, dataset: { count: s } },
          h("b", {}, count(study.counts[s] || 0)),
          s,
        ),
      ),
    );
    if (Array.isArray(study.best)) {
      best.replaceChildren(...paretoBest(study));
      return;
    }
    best.replaceChildren(
      ...(study.best
        ? [
            h("span", { class: "note" }, "Best"),
            h(
              "a",
              {
                href: `#/studies/${study.id}/trials/${study.best.number}`,
                class: "value",
                id: "best-value",
              },
              num(study.best.value),
            ),
            h("span", { class: "note" }, `trial #${study.best.number}`),
            // A plain link: the browser downloads with the page's session cookie.
            study.best.model_url
              ? h(
                  "a",
                  {
                    class: "download",
                    id: "best-model",
                    href: study.best.model_url,
                    download: true,
                  },
                  "Download model",
                )
              : null,
            heldOut(study.best.test_metrics, "best-held-out"),
            h(
              "span",
              { class: "chips" },
              Object.entries(study.best.params).map(([k, v]) =>
                h("span", { class: "chip" }, h("b", {}, k), paramText(v)),
              ),
            ),
          ]
        : [h("span", { class: "note" }, "No completed trial yet.")]),
    );
  }
  return { el, render, live, message, stop, resume, title };
}

/** The header's best of a multi-objective study: its Pareto set, a link per trial. */
function paretoBest(study) {
  if (!study.best.length) return [h("span", { class: "note" }, "No completed trial yet.")];
  const metrics = study.spec.objectives.map((o) => o.metric);
  return [
    h("span", { class: "note" }, `Pareto front: ${count(study.best.length)} trials`),
    h(
      "span",
      { class: "chips", id: "best-front" },
      study.best.map((b) =>
        h(
          "a",
          {
            class: "chip",
            href: `#/studies/${study.id}/trials/${b.number}`,
            dataset: { front: b.number },
            title: metrics.map((m, i) => `${m} ${num(b.values[i])}`).join(", "),
          },
          h("b", {}, `#${b.number}`),
          b.values.map((v) => num(v)).join(" · "),
        ),
      ),
    ),
  ];
}

// Which panels an event asks to reload.
const RELOADS = {
  study_state: ["summary"],
  trial_started: ["summary", "table", "curves"],
  trial_state: ["summary", "table"],
  trial_promoted: ["summary", "table"],
  trial_reported: ["table"],
  trial_finished: ["summary", "table", "history", "curves", "parallel", "importance", "front"],
};
const STATUS_TEXT = {
  live: "live",
  reconnecting: "reconnecting…",
  gone: "study deleted",
  unauthorized: "signed out",
};

class StudyPage {
  constructor(main, id) {
    this.main = main;
    this.id = id;
    this.study = null;
    this.metric = null;
    this.metrics = [];
    this.table = null;
    this.follower = null;
    this.build();
    this.refresh = this.refreshers();
  }

  build() {
    const go = (number) => this.go(number);
    this.head = header((action) => this.act(action));
    this.curves = curvesPanel({
      onPick: (trialId) => this.openCurve(trialId),
      onMetric: (m) => this.showMetric(m),
    });
    this.history = historyPanel({ onPick: go });
    this.parallel = parallelPanel({ onPick: go });
    this.importance = importancePanel();
    this.front = frontPanel({ onPick: go });
    this.front.el.hidden = true; // shown for a study with several objectives
    this.rungs = rungsPanel({ onPick: (b, r) => this.table?.showReached(b, r) });
    this.dialog = trialDialog({
      // Back to the study only from the address of the trial closed: one the user went to
      // meanwhile (a link, the address bar) stays.
      onClose: (number) => {
        const named = window.location.hash.match(/\/trials\/(\d+)\/?$/);
        if (named && Number(named[1]) === number) go(null);
      },
      multiFidelity: () => this.multi,
    });
    this.compare = compareDialog();
    this.rungSlot = h("div");
    this.tableSlot = h("div");
    const charts = h(
      "div",
      { class: "grid2" },
      this.front.el,
      this.curves.el,
      this.history.el,
      this.parallel.el,
      this.importance.el,
    );
    this.main.append(
      h("div", { class: "stack" }, this.head.el, charts, this.rungSlot, this.tableSlot),
      this.dialog.el,
      this.compare.el,
    );
  }

  refreshers() {
    const { id } = this;
    return {
      summary: new Refresher(async () => this.showOverview(await api.dashboard(id)), {
        base: 1000,
      }),
      curves: new Refresher(
        async () =>
          this.curves.render(
            await api.curves(id, { metric: this.metric, limit: CURVE_LIMIT }),
            this.dialog.trialId,
          ),
        { base: 2000 },
      ),
      history: new Refresher(async () => this.history.render(await api.history(id)), {
        base: 1500,
      }),
      parallel: new Refresher(async () => this.parallel.render(await api.parallel(id)), {
        base: 2500,
      }),
      importance: new Refresher(async () => this.importance.render(await api.importance(id)), {
        base: 5000,
      }),
      table: new Refresher(async () => this.table?.refresh(), { base: 1500 }),
      front: new Refresher(async () => this.study?.spec.objectives && this.front.load(this.study), {
        base: 2000,
      }),
      trial: new Refresher(async () => this.dialog.refresh(), { base: 1000 }),
    };
  }

  /** The header first, then the event stream from the header's moment, then the charts. */
  async start() {
    let overview;
    try {
      overview = await api.dashboard(this.id);
    } catch (err) {
      const text =
        err.status === 404
          ? `Study ${this.id} does not exist.`
          : `Could not load the study: ${err.message}`;
      this.main.replaceChildren(h("p", { class: "notice" }, text));
      return;
    }
    this.showOverview(overview);
    this.follower = new EventFollower(`/api/v1/studies/${this.id}/events`, {
      lastId: overview.last_event_id,
      onEvent: (kind, data, eventId) => this.onEvent(kind, data, eventId),
      onStatus: (status) => this.onStatus(status),
    }).start();
    // Two lanes rather than four requests at once: the server's threads share one interpreter,
    // so the first charts come sooner when the heavier aggregates wait their turn.
    [
      ["history", "parallel"],
      ["curves", "importance"],
    ].forEach(async (lane) => {
      for (const name of lane) await this.refresh[name].now();
    });
  }

  go(number) {
    window.location.hash =
      number === null ? `#/studies/${this.id}` : `#/studies/${this.id}/trials/${number}`;
  }

  openCurve(trialId) {
    const curve = this.curves.data?.curves.find((c) => c.trial_id === trialId);
    if (curve) this.go(curve.number);
  }

  showMetric(metric) {
    this.metric = metric;
    this.refresh.curves.now();
  }

  async act(action) {
    const study = this.study;
    if (!study) return;
    if (action === "spec") return showSpec(study);
    if (action === "clone") return cloneStudy(study);
    if (action === "budget") return editBudget(study, (updated) => this.showStudy(updated));
    if (action === "delete") {
      return confirmDelete(study, () => {
        window.location.hash = "#/";
      });
    }
    this.head.message.textContent = "";
    try {
      this.showStudy(await api[action](this.id));
    } catch (err) {
      this.head.message.textContent = err.message;
    }
    // Stop disables itself (and Resume itself): keep the keyboard focus on the other one
    const { stop, resume, title } = this.head;
    if (document.activeElement === document.body || document.activeElement?.disabled) {
      const next = [resume, stop].find((b) => !b.disabled);
      if (next) next.focus();
      else title.focus();
    }
  }

  showStudy(study) {
    const before = JSON.stringify(this.study?.best);
    this.study = study;
    this.head.render(study);
    if (study.spec.objectives) {
      // One value per trial has no meaning here: the front replaces history, parallel
      // coordinates and importance, and follows the study's Pareto set.
      this.front.el.hidden = false;
      [this.history, this.parallel, this.importance].forEach((p) => (p.el.hidden = true));
      if (JSON.stringify(study.best) !== before) this.refresh.front.request();
    }
    crumbs(["Studies", "#/"], study.name);
    document.title = `${study.name} · hpo`;
  }

  showOverview(overview) {
    const { spec } = overview.study;
    this.showStudy(overview.study);
    this.metrics = overview.metrics;
    this.metric = this.metric || spec.objective.metric;
    this.curves.setMetrics(this.metrics, this.metric);
    const multi = MULTI_FIDELITY.includes(spec.strategy.kind) || overview.rungs.length > 1;
    this.multi = multi;
    if (multi) {
      this.rungs.render(overview.rungs);
      if (!this.rungSlot.firstChild) this.rungSlot.append(this.rungs.el);
    }
    if (!this.table) {
      this.table = trialTable({
        studyId: this.id,
        params: Object.keys(spec.space),
        multiFidelity: multi,
        objectives: spec.objectives || null,
        front: () =>
          new Set(Array.isArray(this.study?.best) ? this.study.best.map((b) => b.number) : []),
        onOpen: (n) => this.go(n),
        onCompare: (numbers) => this.compare.open(this.id, numbers, this.metric),
      });
      this.tableSlot.append(this.table.el);
      this.refresh.table.now();
    }
  }

  /** Change what the event changes in place, and ask the panels it touches to reload. */
  onEvent(kind, data, eventId) {
    window.hpoEvents.ids.push(Number(eventId));
    const reloads = [...(RELOADS[kind] || ["summary"])];
    if (kind === "trial_reported" && this.curves.data) {
      // redrawn once per frame, however many reports arrive
      if (applyReport(this.curves.data, data, this.metric, CURVE_LIMIT)) this.curves.redraw();
      if (Object.keys(data.metrics || {}).some((m) => !this.metrics.includes(m)))
        reloads.push("summary");
    }
    if (kind === "trial_finished") {
      applyFinished(this.curves.data, this.history.data, data, this.study);
      this.curves.redraw();
      this.history.redraw();
    }
    if (data.trial_id !== undefined && data.trial_id === this.dialog.trialId) reloads.push("trial");
    reloads.forEach((name) => this.refresh[name].request());
  }

  onStatus(status) {
    const live = this.head.live;
    const was = live.dataset.status;
    live.dataset.status = status;
    live.textContent = STATUS_TEXT[status] || status;
    if (status === "live" && was === "reconnecting")
      Object.values(this.refresh).forEach((r) => r.request());
  }

  /** Show trial `number` (null: none) and draw its curve on top of the others. */
  async openTrial(number) {
    if (number === null) this.dialog.close();
    else if (number !== this.dialog.number) await this.dialog.open(this.id, number);
    this.table?.select(number);
    if (this.curves.data) this.curves.render(this.curves.data, this.dialog.trialId);
  }

  unmount() {
    this.follower?.stop();
    Object.values(this.refresh).forEach((r) => r.close());
    [this.curves, this.history, this.parallel, this.importance, this.front].forEach((p) =>
      p.close(),
    );
    this.dialog.close();
    this.compare.close();
  }
}

export function mountStudy(main, target) {
  // what the stream delivered, for tests and debugging
  window.hpoEvents = { study: target.id, ids: [] };
  const page = new StudyPage(main, target.id);
  page.start();
  if (target.trial !== null) page.openTrial(target.trial);
  return { update: (next) => page.openTrial(next.trial), unmount: () => page.unmount() };
}
