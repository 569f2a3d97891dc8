// The REST API as the page uses it. Errors become ApiError with the server's `detail`.

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `request failed (${status})`);
    this.status = status;
    this.detail = detail;
  }

  /** Field errors as [{path: ["space", "lr", "high"], msg, type}] ("body" / "query" off). */
  fieldErrors() {
    if (!Array.isArray(this.detail)) return [];
    return this.detail.map((e) => ({
      path: (e.loc || []).filter((part, i) => !(i === 0 && (part === "body" || part === "query"))),
      msg: e.msg || String(e),
      type: e.type || null,
    }));
  }
}

let onUnauthorized = () => {};

/** Called with no argument whenever the server answers 401 (the page then asks for a token),
 * except to the token form's own request. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function request(method, path, { params, body, contentType, own401 = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = contentType || "application/json";
  }
  const response = await fetch(url, init);
  if (response.status === 204) return null;
  const text = await response.text();
  let data;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    if (response.status === 401 && !own401) onUnauthorized();
    throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : text);
  }
  return data;
}

export const api = {
  get: (path, params) => request("GET", path, { params }),
  post: (path, body, contentType) => request("POST", path, { body, contentType }),
  session: () => request("GET", "/api/v1/session"),
  openSession: (token) => request("POST", "/api/v1/session", { body: { token }, own401: true }),
  studies: () => request("GET", "/api/v1/studies"),
  workers: () => request("GET", "/api/v1/workers"),
  study: (id) => request("GET", `/api/v1/studies/${id}`),
  trial: (id) => request("GET", `/api/v1/trials/${id}`),
  stop: (id) => request("POST", `/api/v1/studies/${id}/stop`),
  remove: (id) => request("DELETE", `/api/v1/studies/${id}`),
  /** PATCH the budget: {max_trials, parallel_trials}, either may be left out. */
  patchBudget: (id, budget) => request("PATCH", `/api/v1/studies/${id}`, { body: { budget } }),
  /** The API's OpenAPI document (the spec's JSON schema is the body of POST /studies). */
  openapi: () => request("GET", "/openapi.json"),
  resume: (id) => request("POST", `/api/v1/studies/${id}/resume`),
  /** Create a study from spec text: JSON when it parses as JSON, otherwise YAML. */
  launch(text) {
    let json = true;
    try {
      JSON.parse(text);
    } catch {
      json = false;
    }
    return request("POST", "/api/v1/studies", {
      body: text,
      contentType: json ? "application/json" : "application/yaml",
    });
  },
  dashboard: (id) => request("GET", `/api/v1/dashboard/studies/${id}`),
  curves: (id, params) => request("GET", `/api/v1/dashboard/studies/${id}/curves`, { params }),
  history: (id) => request("GET", `/api/v1/dashboard/studies/${id}/history`),
  parallel: (id) => request("GET", `/api/v1/dashboard/studies/${id}/parallel`),
  importance: (id) => request("GET", `/api/v1/dashboard/studies/${id}/importance`),
  table: (id, params) => request("GET", `/api/v1/dashboard/studies/${id}/trials`, { params }),
};
