// The launch form: a spec pasted, typed or loaded from a file (YAML or JSON), sent to
// POST /api/v1/studies; the server's validation errors are listed beside the editor with the
// field's path, and the lines they point at are marked in the editor's gutter.

import { api } from "../api.js";
import { h } from "../dom.js";
import { fieldHint, specSchema } from "../specschema.js";

const EXAMPLE = `name: NAME
objective: {metric: val_accuracy, direction: maximize}
strategy:
  kind: tpe            # grid | random | tpe | gp | nsga2 | successive_halving | hyperband
  seed: 0
  early_stopping: none # none | median | asha
budget:
  max_trials: 20
  parallel_trials: 2
  epochs: 10
space:
  lr:           {type: float, low: 1.0e-4, high: 0.3, log: true}
  batch_size:   {type: categorical, choices: [32, 64, 128]}
  dropout:      {type: float, low: 0.0, high: 0.5}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  norm:         {type: categorical, choices: [none, batch, layer]}
workload:
  model: mlp
  dataset: digits
`;

function exampleSpec() {
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "");
  return EXAMPLE.replace("NAME", `study-${stamp}`);
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * The 0-based line of `text` where the field at `path` (e.g. ["space", "lr", "high"]) is written,
 * in block or flow YAML or in JSON; the deepest line found when the full path is not, or -1.
 */
export function locate(text, path) {
  const lines = text.split("\n");
  let line = -1;
  let indent = -1;
  let column = 0;
  for (const part of path) {
    if (typeof part !== "string") continue;
    const key = new RegExp(`(^|[\\s{,])["']?${escapeRegExp(part)}["']?\\s*:`);
    // flow style: the key may follow on the line found so far
    if (line >= 0 && key.test(lines[line].slice(column))) {
      column += lines[line].slice(column).search(key) + 1;
      continue;
    }
    let found = -1;
    for (let i = line + 1; i < lines.length; i += 1) {
      const body = lines[i].replace(/#.*$/, "");
      if (!body.trim()) continue;
      const lead = body.length - body.trimStart().length;
      if (line >= 0 && lead <= indent) break; // left the parent's block
      if (key.test(body)) {
        found = i;
        indent = lead;
        break;
      }
    }
    if (found < 0) return line;
    line = found;
    column = 0;
  }
  return line;
}

function editor() {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const area = h("textarea", {
    name: "spec",
    spellcheck: "false",
    "aria-label": "study spec (YAML or JSON)",
    placeholder: "Paste a study spec here (YAML or JSON), load a file, or start from the example.",
  });
  const marks = new Set();
  const paint = () => {
    const n = area.value.split("\n").length;
    gutter.replaceChildren(
      ...Array.from({ length: n }, (_, i) =>
        h("div", { class: marks.has(i) ? "bad" : null }, i + 1),
      ),
    );
    gutter.scrollTop = area.scrollTop;
  };
  area.addEventListener("input", () => {
    marks.clear();
    paint();
  });
  area.addEventListener("scroll", () => {
    gutter.scrollTop = area.scrollTop;
  });
  paint();
  const el = h("div", { class: "editor" }, gutter, area);
  return {
    el,
    area,
    mark(lines) {
      marks.clear();
      lines.filter((i) => i >= 0).forEach((i) => marks.add(i));
      paint();
    },
    select(line) {
      const starts = area.value.split("\n").map((l) => l.length + 1);
      const begin = starts.slice(0, line).reduce((a, b) => a + b, 0);
      area.focus();
      area.setSelectionRange(begin, begin + starts[line] - 1);
    },
  };
}

/** The 0-based line a message names ("... (line 3, column 1)", as YAML syntax errors do), or -1. */
export function namedLine(msg) {
  const found = /\bline (\d+)\b/.exec(msg);
  return found ? Number(found[1]) - 1 : -1;
}

/** "did you mean `max_trials`?" as text with the back-quoted names in <code>. */
function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? h("code", {}, part) : part));
}

/** Hints for fields the server did not expect, from the spec schema (null where none). */
async function hintsFor(items) {
  if (!items.some((e) => e.type === "extra_forbidden")) return items.map(() => null);
  try {
    const schema = await specSchema();
    return items.map((e) => (e.type === "extra_forbidden" ? fieldHint(schema, e.path) : null));
  } catch {
    return items.map(() => null); // the hints are a help, the errors stand without them
  }
}

async function showErrors(box, ed, err) {
  const fields = err.fieldErrors();
  const text = ed.area.value;
  const items = (fields.length ? fields : [{ path: [], msg: err.message, type: null }]).map(
    (f) => ({
      ...f,
      line: f.path.length ? locate(text, f.path) : namedLine(f.msg),
    }),
  );
  const hints = await hintsFor(items);
  ed.mark(items.map((e) => e.line));
  box.replaceChildren(
    h("p", { class: "note" }, `The server refused the spec (${err.status}):`),
    ...items.map((e, i) =>
      h(
        "div",
        { class: "error", role: "alert", dataset: { field: e.path.join(".") } },
        e.path.length ? h("span", { class: "where" }, e.path.join(" › ")) : null,
        h("span", { class: "msg" }, e.msg),
        hints[i] ? h("span", { class: "hint" }, withCode(hints[i])) : null,
        e.line >= 0
          ? h(
              "button",
              { type: "button", class: "ghost", onclick: () => ed.select(e.line) },
              `line ${e.line + 1}`,
            )
          : null,
      ),
    ),
  );
}

/** The form as an element; onLaunched(study) after a 201. */
export function launchPanel({ onLaunched, onCancel }) {
  const ed = editor();
  const errors = h(
    "div",
    { class: "errors", "aria-live": "polite" },
    h("p", { class: "note" }, "Validation errors from the server appear here, next to the spec."),
  );
  const file = h("input", {
    type: "file",
    accept: ".yaml,.yml,.json,application/json,text/yaml",
    hidden: true,
  });
  const launch = h("button", { type: "submit", class: "primary" }, "Launch");
  const setText = (text) => {
    ed.area.value = text;
    ed.area.dispatchEvent(new Event("input"));
  };
  // errors about text that has changed since would point at the wrong lines: clear them
  ed.area.addEventListener("input", () => {
    if (errors.querySelector(".error")) {
      errors.replaceChildren(
        h("p", { class: "note" }, "The spec changed: launch again to check it."),
      );
    }
  });
  file.addEventListener("change", async () => {
    if (file.files.length) setText(await file.files[0].text());
    file.value = "";
  });
  const form = h(
    "form",
    { class: "panel stack", "aria-label": "launch a study" },
    h(
      "div",
      { class: "panel-head" },
      h("h2", {}, "Launch a study"),
      h(
        "span",
        { class: "note" },
        "YAML or JSON, as for hpo submit: see the ",
        h("a", { href: "#/spec", target: "_blank", rel: "noopener" }, "spec reference"),
      ),
    ),
    h("div", { class: "launch" }, ed.el, errors),
    h(
      "div",
      { class: "form-actions" },
      launch,
      h("button", { type: "button", onclick: () => file.click() }, "Load file…"),
      h("button", { type: "button", onclick: () => setText(exampleSpec()) }, "Example"),
      h("button", { type: "button", class: "ghost", onclick: onCancel }, "Cancel"),
      file,
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    launch.disabled = true;
    try {
      const study = await api.launch(ed.area.value);
      errors.replaceChildren();
      ed.mark([]);
      onLaunched(study);
    } catch (err) {
      if (err.status === undefined) throw err;
      await showErrors(errors, ed, err);
    } finally {
      launch.disabled = false;
    }
  });
  return { el: form, setText, focus: () => ed.area.focus() };
}
