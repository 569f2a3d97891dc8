// Follows a study's server-sent events with fetch(), so that the first connection can start at
// the event the page's snapshot was taken at (EventSource can only send Last-Event-ID on
// reconnects, and would replay a large study's whole log first). Reconnects by itself after
// the server goes away, sending Last-Event-ID, so nothing in between is missed.

const DEFAULT_RETRY_MS = 2000;

/** Parse SSE text into events; returns [events, rest] where rest is an unfinished block. */
export function parseBlocks(buffer) {
  const events = [];
  const normalized = buffer.replace(/\r\n?/g, "\n");
  const blocks = normalized.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, kind: "message", data: [], retry: null };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") event.id = value;
      else if (field === "event") event.kind = value;
      else if (field === "data") event.data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
    }
    events.push(event);
  }
  return [events, rest];
}

export class EventFollower {
  /**
   * url: the events endpoint; lastId: the event to continue after (null: from the start);
   * onEvent(kind, data, id) for each event with data;
   * onStatus("live" | "reconnecting" | "gone" | "unauthorized"); the last two end the loop.
   */
  constructor(url, { lastId = null, onEvent, onStatus = () => {} }) {
    this.url = url;
    this.lastId = lastId;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.retryMs = DEFAULT_RETRY_MS;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (!this.stopped) {
      const outcome = await this.connect().catch(() => "retry");
      if (this.stopped) return;
      if (outcome === "gone" || outcome === "unauthorized") {
        this.onStatus(outcome);
        return;
      }
      this.onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  async connect() {
    this.controller = new AbortController();
    const headers = { Accept: "text/event-stream" };
    if (this.lastId !== null) headers["Last-Event-ID"] = String(this.lastId);
    const response = await fetch(this.url, {
      headers,
      cache: "no-store",
      credentials: "same-origin",
      signal: this.controller.signal,
    });
    if (response.status === 404) return "gone";
    if (response.status === 401) return "unauthorized";
    if (!response.ok || !response.body) return "retry";
    this.onStatus("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "retry";
      const [events, rest] = parseBlocks(buffer + value);
      buffer = rest;
      events.forEach((event) => this.dispatch(event));
    }
  }

  dispatch(event) {
    if (event.retry !== null) this.retryMs = event.retry;
    if (event.id !== null) this.lastId = event.id;
    if (!event.data.length) return;
    let data;
    try {
      data = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    this.onEvent(event.kind, data, event.id);
  }
}
