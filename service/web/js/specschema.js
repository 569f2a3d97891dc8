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
      // the fields a parameter of `space` may have, whatever its type
      const kinds = sections.space?.schema.additionalProperties;
      const variants = kinds ? deref(doc, kinds).oneOf || deref(doc, kinds).anyOf || [] : [];
      const paramFields = [
        ...new Set(variants.flatMap((v) => Object.keys(deref(doc, v).properties || {}))),
      ];
      return { doc, root, deref: (node) => deref(doc, node), sections, paramFields };
    });
  loading.catch(() => {
    loading = null; // try again next time
  });
  return loading;
}

/** Edit distance counting a swap of two neighbouring letters as one edit ("hgih" is one from
 * "high"), for near-miss field names. */
export function distance(a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i += 1) {
    for (let j = 1; j <= b.length; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * A hint for a field the server did not expect at `path` (["budget", "max_trial"]): where it
 * belongs when another section has it ("`n_configs` belongs under `strategy`"), else the
 * closest field of its own section ("did you mean `max_trials`?"), or of a parameter for
 * ["space", "lr", "hgih"], else null.
 */
export function fieldHint(schema, path) {
  const field = path[path.length - 1];
  if (typeof field !== "string") return null;
  if (path.length === 3 && path[0] === "space") return nearest(field, schema.paramFields);
  if (path.length > 2) return null;
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
  return nearest(field, here);
}

/** "did you mean `name`?" for the closest of `names` within a third of the field's length. */
function nearest(field, names) {
  const limit = Math.max(1, Math.floor(field.length / 3));
  const near = names
    .map((name) => [distance(field.toLowerCase(), name.toLowerCase()), name])
    .filter(([d]) => d <= limit)
    .sort((a, b) => a[0] - b[0]);
  return near.length ? `did you mean \`${near[0][1]}\`?` : null;
}
