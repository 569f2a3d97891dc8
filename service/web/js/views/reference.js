// The spec reference (#/spec): every section and field of a study spec with its type, bounds,
// default and description, read from the server's own schema (specschema.js), so it always
// says what this server accepts.

import { crumbs, h, scroller } from "../dom.js";
import { specSchema } from "../specschema.js";

/** "integer, 1 to 1024", "one of: none, median, asha", "number or null", ... */
function typeText(schema, node) {
  const n = schema.deref(node);
  if (n.const !== undefined) return `"${n.const}"`;
  if (n.enum) return `one of: ${n.enum.join(", ")}`;
  if (n.anyOf || n.oneOf) {
    const kinds = (n.anyOf || n.oneOf).map((k) => typeText(schema, k)).filter((t) => t !== "null");
    return (
      [...new Set(kinds)].join(" or ") +
      ((n.anyOf || []).some((k) => k.type === "null") ? " (optional)" : "")
    );
  }
  if (n.type === "array") return `list of ${n.items ? typeText(schema, n.items) : "values"}`;
  if (n.type === "object") return n.properties ? "mapping (below)" : "mapping";
  const bounds = [];
  if (n.minimum !== undefined) bounds.push(`≥ ${n.minimum}`);
  if (n.exclusiveMinimum !== undefined) bounds.push(`> ${n.exclusiveMinimum}`);
  if (n.maximum !== undefined) bounds.push(`≤ ${n.maximum}`);
  if (n.minLength !== undefined) bounds.push(`at least ${n.minLength} characters`);
  return [n.type || "any", ...bounds].join(", ");
}

function fieldTable(schema, node, required) {
  const rows = Object.entries(node.properties || {}).map(([name, field]) => {
    const f = schema.deref(field);
    return h(
      "tr",
      { dataset: { field: name } },
      h("td", {}, h("code", {}, name)),
      h("td", { class: "wrap" }, typeText(schema, f)),
      h(
        "td",
        {},
        (required || []).includes(name)
          ? "required"
          : f.default === undefined
            ? "—"
            : JSON.stringify(f.default),
      ),
      h("td", { class: "wrap" }, f.description || ""),
    );
  });
  return scroller(
    "fields",
    h(
      "table",
      { class: "data" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Field", "Type", "Default", "About"].map((t) => h("th", {}, t)),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

function section(schema, name, node, required) {
  const n = schema.deref(node);
  const parts = [
    h("h2", { id: `spec-${name}` }, h("code", {}, name), required ? " (required)" : ""),
  ];
  if (n.description) parts.push(h("p", { class: "note pre-line" }, n.description));
  if (n.properties) parts.push(fieldTable(schema, n, n.required));
  const values = n.additionalProperties && schema.deref(n.additionalProperties);
  const kinds = values && (values.oneOf || values.anyOf);
  if (kinds) {
    parts.push(h("p", { class: "note" }, `A mapping of names to one of ${kinds.length} kinds:`));
    for (const kind of kinds.map((k) => schema.deref(k))) {
      parts.push(h("h3", {}, kind.title || "kind"));
      if (kind.description) parts.push(h("p", { class: "note pre-line" }, kind.description));
      parts.push(fieldTable(schema, kind, kind.required));
    }
  } else if (!n.properties) {
    parts.push(h("p", { class: "note" }, typeText(schema, n)));
  }
  return h("section", { class: "panel stack", "aria-label": `spec ${name}` }, parts);
}

export function mountSpecReference(main) {
  crumbs(["Studies", "#/"], "Spec reference");
  document.title = "Spec reference · hpo";
  const box = h(
    "div",
    { class: "stack", id: "spec-reference" },
    h("p", { class: "note" }, "Loading…"),
  );
  main.append(box);
  specSchema()
    .then((schema) => {
      const { root } = schema;
      box.replaceChildren(
        h(
          "section",
          { class: "panel stack", "aria-label": "about the spec" },
          h("h1", {}, "Study spec reference"),
          h(
            "p",
            { class: "note" },
            "What POST /api/v1/studies, hpo submit and the launch form accept, in YAML or JSON, ",
            "as this server validates it. ",
            h("a", { href: "#/new" }, "Launch a study"),
          ),
          root.description ? h("p", { class: "note pre-line" }, root.description) : null,
        ),
        ...Object.entries(root.properties).map(([name, node]) =>
          section(schema, name, node, (root.required || []).includes(name)),
        ),
      );
    })
    .catch((err) => {
      box.replaceChildren(
        h("p", { class: "notice" }, `Could not load the spec schema: ${err.message}`),
      );
    });
  return { unmount() {} };
}
