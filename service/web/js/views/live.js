// In-place changes that events make to the data the charts hold, between reloads.

/** Put a reported epoch on its trial's curve (a new curve while fewer than `limit` are drawn).
 * Returns whether anything changed. */
export function applyReport(curves, event, metric, limit) {
  let curve = curves.curves.find((c) => c.trial_id === event.trial_id);
  if (!curve) {
    if (curves.curves.length >= limit) return false;
    curve = {
      trial_id: event.trial_id,
      number: event.number,
      state: "running",
      value: null,
      best: false,
      points: [],
    };
    curves.curves.push(curve);
    curves.total = Math.max(curves.total, curves.curves.length);
  }
  const raw = event.metrics ? event.metrics[metric] : undefined;
  const value = typeof raw === "number" ? raw : null;
  const at = curve.points.findIndex((p) => p[0] >= event.epoch);
  if (at < 0) curve.points.push([event.epoch, value]);
  else if (curve.points[at][0] === event.epoch) curve.points[at] = [event.epoch, value];
  else curve.points.splice(at, 0, [event.epoch, value]);
  return true;
}

function better(a, b, maximize) {
  return b === undefined || b === null || (maximize ? a > b : a < b);
}

/** A finished trial: its curve's state, and its point (and a new best-so-far step) in the
 * history. Either data may be null (not loaded yet). */
export function applyFinished(curves, history, event, study) {
  const maximize = study ? study.spec.objective.direction === "maximize" : true;
  const curve = curves && curves.curves.find((c) => c.trial_id === event.trial_id);
  if (curve) {
    curve.state = event.state;
    curve.value = event.value;
    const best = curves.curves.find((c) => c.best);
    if (
      event.state === "completed" &&
      event.value !== null &&
      better(event.value, best?.value, maximize)
    ) {
      if (best) best.best = false;
      curve.best = true;
    }
  }
  if (!history || event.value === null || !["completed", "pruned"].includes(event.state)) return;
  if (history.points.some((p) => p[0] === event.number)) return;
  history.points.push([event.number, event.value, event.state]);
  history.points.sort((a, b) => a[0] - b[0]);
  history.total += 1;
  if (event.state !== "completed") return;
  const before = history.best.filter((b) => b[0] < event.number);
  const record = before.length ? before[before.length - 1][1] : undefined;
  if (better(event.value, record, maximize)) {
    const after = history.best.filter(
      (b) => b[0] > event.number && better(b[1], event.value, maximize),
    );
    history.best = [...before, [event.number, event.value], ...after];
  }
}
