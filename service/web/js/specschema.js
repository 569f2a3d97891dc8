// The study spec's JSON schema, as the server states it in its OpenAPI document (the body of
// POST /api/v1/studies): the one source of the spec reference page and of the launch form's
// hints for a misspelt or misplaced field, so both always match what the server validates.

import { api } from "./api.js";

let loading = null;

/** Follow a local "$ref" of the OpenAPI document. */
function deref(doc, node) {
  let out = node;
  while (out && out.$ref) {
    out = out.$ref
      .replace(/^#\//, "")
      .split("/")
      .reduce((at, key) => at?.[key], doc);
  }
  return out || {};
}

/** The spec schema: {root, sections: {name: {schema, fields}}}, loaded once per page. */
export function specSchema() {
  loading =
    loading ||
    api.openapi().then((doc) => {
      const body = doc.paths["/api/v1/studies"].post.requestBody.content["application/json"];
      const root = deref(doc, body.schema);
      const sections = {};
      for (const [name, node] of Object.entries(root.properties || {})) {
        const schema = deref(doc, node);
        sections[name] = {
          schema,
          fields: schema.properties ? Object.keys(schema.properties) : [],
        };
      }
      return { doc, root, deref: (node) => deref(doc, node), sections };
    });
  loading.catch(() => {
    loading = null; // try again next time
  });
  return loading;
}

/** Levenshtein distance, for near-miss field names. */
export function distance(a, b) {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    const next = [i];
    for (let j = 1; j <= b.length; j += 1) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}

/**
 * A hint for a field the server did not expect at `path` (["budget", "max_trial"]): where it
 * belongs when another section has it ("`n_configs` belongs under `strategy`"), else the
 * closest field of its own section ("did you mean `max_trials`?"), else null.
 */
export function fieldHint(schema, path) {
  const field = path[path.length - 1];
  if (typeof field !== "string" || path.length > 2) return null;
  const section = path.length === 2 ? path[0] : null;
  const here = section === null ? Object.keys(schema.sections) : schema.sections[section]?.fields;
  if (!here) return null;
  const owners = Object.entries(schema.sections)
    .filter(([name, s]) => name !== section && s.fields.includes(field))
    .map(([name]) => name);
  if (owners.length) return `\`${field}\` belongs under \`${owners[0]}\``;
  if (section !== null && Object.keys(schema.sections).includes(field)) {
    return `\`${field}\` is a section of its own, not part of \`${section}\``;
  }
  const limit = Math.max(1, Math.floor(field.length / 3));
  const near = here
    .map((name) => [distance(field.toLowerCase(), name.toLowerCase()), name])
    .filter(([d]) => d <= limit)
    .sort((a, b) => a[0] - b[0]);
  return near.length ? `did you mean \`${near[0][1]}\`?` : null;
}
