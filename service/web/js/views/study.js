// A study's page: header (state, counts, best, stop / resume), charts, rungs, the trial table and
// the trial dialog, kept live by the study's event stream. Events change what they can in place
// (a reported epoch extends its curve, a finished trial joins the history) and ask the panels'
// refreshers to reload from the server, which they do at most every few seconds.

import { api } from "../api.js";
import { EventFollower } from "../events.js";
import { Refresher } from "../refresh.js";
import { STATES, badge, count, crumbs, h, num, paramText } from "../dom.js";
import { CURVE_LIMIT, curvesPanel, historyPanel, importancePanel, parallelPanel, rungsPanel } from "./panels.js";
import { applyFinished, applyReport } from "./live.js";
import { trialTable } from "./table.js";
import { trialDialog } from "./trial.js";

const MULTI_FIDELITY = ["successive_halving", "hyperband"];

function header(onAction) {
  const title = h("h1", { id: "study-name" });
  const state = h("span", { id: "study-state" });
  const live = h("span", { class: "live", id: "live", "data-status": "connecting" }, "connecting");
  const stop = h("button", { type: "button", class: "danger", id: "stop", onclick: () => onAction("stop") }, "Stop");
  const resume = h("button", { type: "button", id: "resume", onclick: () => onAction("resume") }, "Resume");
  const message = h("span", { class: "note", role: "alert" });
  const counts = h("div", { class: "chips", id: "counts" });
  const about = h("div", { class: "note" });
  const best = h("div", { class: "best", id: "best" });
  const el = h(
    "section",
    { class: "panel study-head", "aria-label": "study" },
    h("div", { class: "study-title" }, title, state, h("div", { class: "actions" }, message, live, stop, resume)),
    about,
    counts,
    best,
  );
  function render(study) {
    title.textContent = study.name;
    state.replaceChildren(badge(study.state));
    stop.disabled = study.state !== "running";
    resume.disabled = study.state !== "stopped";
    const spec = study.spec;
    const finished = study.counts.completed + study.counts.pruned + study.counts.failed;
    about.textContent = `${spec.strategy.kind} · ${spec.objective.direction} ${spec.objective.metric} · ${spec.workload.model} on ${spec.workload.dataset} · ${count(finished)} of ${count(study.max_trials)} trials finished${study.reason ? ` · ${study.reason}` : ""}`;
    counts.replaceChildren(
      ...STATES.map((s) => h("span", { class: `chip state-${s}`, dataset: { count: s } }, h("b", {}, count(study.counts[s] || 0)), s)),
    );
    best.replaceChildren(
      ...(study.best
        ? [
            h("span", { class: "note" }, "Best"),
            h("a", { href: `#/studies/${study.id}/trials/${study.best.number}`, class: "value", id: "best-value" }, num(study.best.value)),
            h("span", { class: "note" }, `trial #${study.best.number}`),
            h("span", { class: "chips" }, Object.entries(study.best.params).map(([k, v]) => h("span", { class: "chip" }, h("b", {}, k), paramText(v)))),
          ]
        : [h("span", { class: "note" }, "No completed trial yet.")]),
    );
  }
  return { el, render, live, message };
}

export function mountStudy(main, target) {
  const id = target.id;
  window.hpoEvents = { study: id, ids: [] }; // what the stream delivered, for tests and debugging
  const st = { study: null, metric: null, metrics: [], focus: null, follower: null };
  const go = (number) => {
    window.location.hash = number === null ? `#/studies/${id}` : `#/studies/${id}/trials/${number}`;
  };
  const head = header(act);
  const curves = curvesPanel({ onPick: (trialId) => openById(trialId), onMetric: (m) => { st.metric = m; refresh.curves.now(); } });
  const history = historyPanel({ onPick: go });
  const parallel = parallelPanel({ onPick: go });
  const importance = importancePanel();
  const rungs = rungsPanel({ onPick: (b, r) => table?.showGroup(b, r) });
  const dialog = trialDialog({ onClose: () => window.location.hash.includes("/trials/") && go(null) });
  const rungSlot = h("div");
  const tableSlot = h("div");
  let table = null;
  main.append(
    h("div", { class: "stack" }, head.el, h("div", { class: "grid2" }, curves.el, history.el, parallel.el, importance.el), rungSlot, tableSlot),
    dialog.el,
  );

  function openById(trialId) {
    const curve = curves.data && curves.data.curves.find((c) => c.trial_id === trialId);
    if (curve) go(curve.number);
  }

  async function act(action) {
    head.message.textContent = "";
    try {
      showStudy(await api[action](id));
    } catch (err) {
      head.message.textContent = err.message;
    }
  }

  function showStudy(study) {
    st.study = study;
    head.render(study);
    crumbs(["Studies", "#/"], study.name);
    document.title = `${study.name} · hpo`;
  }

  function showOverview(overview) {
    showStudy(overview.study);
    st.metrics = overview.metrics;
    st.metric = st.metric || overview.study.spec.objective.metric;
    curves.setMetrics(st.metrics, st.metric);
    const multi = MULTI_FIDELITY.includes(overview.study.spec.strategy.kind) || overview.rungs.length > 1;
    if (multi) {
      rungs.render(overview.rungs);
      if (!rungSlot.firstChild) rungSlot.append(rungs.el);
    }
    if (!table) {
      table = trialTable({ studyId: id, params: Object.keys(overview.study.spec.space), multiFidelity: multi, onOpen: go });
      tableSlot.append(table.el);
      refresh.table.now();
    }
  }

  const refresh = {
    summary: new Refresher(async () => showOverview(await api.dashboard(id)), { base: 1000 }),
    curves: new Refresher(async () => curves.render(await api.curves(id, { metric: st.metric, limit: CURVE_LIMIT }), dialog.trialId), { base: 2000 }),
    history: new Refresher(async () => history.render(await api.history(id)), { base: 1500 }),
    parallel: new Refresher(async () => parallel.render(await api.parallel(id)), { base: 2500 }),
    importance: new Refresher(async () => importance.render(await api.importance(id)), { base: 5000 }),
    table: new Refresher(async () => table && table.refresh(), { base: 1500 }),
    trial: new Refresher(async () => dialog.refresh(), { base: 1000 }),
  };

  function onEvent(kind, data, eventId) {
    window.hpoEvents.ids.push(Number(eventId));
    const requests = {
      study_state: ["summary"],
      trial_started: ["summary", "table", "curves"],
      trial_state: ["summary", "table"],
      trial_promoted: ["summary", "table"],
      trial_reported: ["table"],
      trial_finished: ["summary", "table", "history", "curves", "parallel", "importance"],
    }[kind] || ["summary"];
    if (kind === "trial_reported" && curves.data) {
      if (applyReport(curves.data, data, st.metric, CURVE_LIMIT)) curves.redraw(); // once per frame
      if (Object.keys(data.metrics || {}).some((m) => !st.metrics.includes(m))) requests.push("summary");
    }
    if (kind === "trial_finished") {
      applyFinished(curves.data, history.data, data, st.study);
      curves.redraw();
      history.redraw();
    }
    if (data.trial_id !== undefined && data.trial_id === dialog.trialId) requests.push("trial");
    requests.forEach((name) => refresh[name].request());
  }

  function onStatus(status) {
    const was = head.live.dataset.status;
    head.live.dataset.status = status;
    head.live.textContent = { live: "live", reconnecting: "reconnecting…", gone: "study deleted", unauthorized: "signed out" }[status] || status;
    if (status === "live" && was === "reconnecting") Object.values(refresh).forEach((r) => r.request());
  }

  async function start() {
    let overview;
    try {
      overview = await api.dashboard(id);
    } catch (err) {
      main.replaceChildren(h("p", { class: "notice" }, err.status === 404 ? `Study ${id} does not exist.` : `Could not load the study: ${err.message}`));
      return;
    }
    showOverview(overview);
    st.follower = new EventFollower(`/api/v1/studies/${id}/events`, { lastId: overview.last_event_id, onEvent, onStatus }).start();
    // Two lanes rather than four requests at once: the server's threads share one interpreter,
    // so the first charts come sooner when the heavier aggregates wait their turn.
    [["history", "parallel"], ["curves", "importance"]].forEach(async (lane) => {
      for (const name of lane) await refresh[name].now();
    });
  }

  start();
  if (target.trial !== null) dialog.open(id, target.trial).then(focusCurve);

  /** Draw the open trial's curve on top in the learning curves. */
  function focusCurve() {
    if (curves.data) curves.render(curves.data, dialog.trialId);
  }

  return {
    update(next) {
      if (next.trial === null) dialog.close();
      else if (next.trial !== dialog.number) dialog.open(id, next.trial).then(focusCurve);
      table?.select(next.trial);
      if (next.trial === null) focusCurve();
    },
    unmount() {
      st.follower?.stop();
      Object.values(refresh).forEach((r) => r.close());
      [curves, history, parallel, importance].forEach((p) => p.close());
      dialog.close();
    },
  };
}
