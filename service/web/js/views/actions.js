// What a study page can do besides Stop and Resume: see and copy the submitted spec, clone it
// into the launch form, raise its budget (PATCH), and delete it after a confirmation. Each opens
// a modal <dialog>; the focus returns to the button that opened it.

import { api } from "../api.js";
import { count, h } from "../dom.js";

/** A modal dialog with a title, content and buttons; closed and removed on Cancel or Esc. */
function modal(id, title, content, buttons) {
  const message = h("p", { class: "note", role: "alert" });
  const opener = document.activeElement;
  const dialog = h(
    "dialog",
    { id, "aria-label": title },
    h(
      "form",
      { method: "dialog", class: "stack dialog-body" },
      h("h2", {}, title),
      content,
      message,
      h("div", { class: "form-actions" }, buttons),
    ),
  );
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, message };
}

/** Copy `text`: the clipboard API where the page may use it, else select it in `area`. */
async function copy(text, area) {
  try {
    await navigator.clipboard.writeText(text);
    return "Copied.";
  } catch {
    area.focus();
    area.select();
    return document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy.";
  }
}

/** The spec as sent back by the server, as JSON (also valid YAML), to read and copy. */
export function showSpec(study) {
  const text = JSON.stringify(study.spec, null, 2);
  const area = h("textarea", {
    readonly: true,
    rows: Math.min(28, text.split("\n").length + 1),
    name: "spec-text",
    "aria-label": "the study's spec",
    class: "spec-text",
  });
  area.value = text;
  const copyButton = h("button", { type: "button", class: "primary" }, "Copy");
  const { message } = modal("spec-dialog", `Spec of ${study.name}`, area, [
    copyButton,
    h("button", { value: "close" }, "Close"),
  ]);
  copyButton.addEventListener("click", async () => {
    message.textContent = await copy(text, area);
  });
}

/** Open the launch form on a copy of the study's spec (its name suffixed). */
export function cloneStudy(study) {
  window.location.hash = `#/new/${study.id}`;
}

/** The PATCH form: raise (or lower) max_trials and parallel_trials; onDone(study). */
export function editBudget(study, onDone) {
  const budget = study.spec.budget || {};
  const field = (name, label, value) =>
    h(
      "label",
      { class: "field" },
      label,
      h("input", { type: "number", name, min: 1, step: 1, value: value ?? "", required: true }),
    );
  const fields = [
    field("max_trials", "Maximum trials", study.max_trials),
    field("parallel_trials", "Trials at once", budget.parallel_trials ?? 1),
  ];
  const save = h("button", { type: "submit", class: "primary", value: "save" }, "Save");
  const { dialog, message } = modal(
    "budget-dialog",
    "Budget",
    [
      h("p", { class: "note" }, `${count(study.counts.completed)} trials completed so far.`),
      fields,
    ],
    [save, h("button", { value: "close", formnovalidate: true }, "Cancel")],
  );
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    if (event.submitter !== save) return;
    event.preventDefault();
    const value = (name) => Number(dialog.querySelector(`input[name=${name}]`).value);
    try {
      const updated = await api.patchBudget(study.id, {
        max_trials: value("max_trials"),
        parallel_trials: value("parallel_trials"),
      });
      dialog.close();
      onDone(updated);
    } catch (err) {
      const fieldErrors = err.fieldErrors ? err.fieldErrors() : [];
      message.textContent = fieldErrors.length
        ? fieldErrors.map((e) => `${e.path.join(" › ")}: ${e.msg}`).join("; ")
        : err.message;
    }
  });
}

/** Ask, then delete the study and its trials; onDone() after the server's 204. */
export function confirmDelete(study, onDone) {
  const total = Object.values(study.counts).reduce((a, b) => a + b, 0);
  const remove = h("button", { type: "submit", class: "danger", value: "delete" }, "Delete");
  const { dialog, message } = modal(
    "delete-dialog",
    `Delete ${study.name}?`,
    h(
      "p",
      {},
      `The study and its ${count(total)} trials are deleted from the server. `,
      "This cannot be undone.",
    ),
    [remove, h("button", { value: "close", autofocus: true }, "Cancel")],
  );
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    if (event.submitter !== remove) return;
    event.preventDefault();
    try {
      await api.remove(study.id);
      dialog.close();
      onDone();
    } catch (err) {
      message.textContent = err.message;
    }
  });
}
