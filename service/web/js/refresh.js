// A panel's reload from the server, asked for by events and run at most every `gap` ms, where
// the gap grows with how long the last load took (a slow aggregate on a big study is asked for
// less often, so a busy study cannot keep the server busy with one open page).

export class Refresher {
  constructor(load, { base = 1000, factor = 10, max = 30000 } = {}) {
    this.load = load;
    this.base = base;
    this.factor = factor;
    this.max = max;
    this.gap = base;
    this.last = 0;
    this.timer = null;
    this.running = false;
    this.again = false;
    this.closed = false;
  }

  /** Ask for a reload: it runs now if the last one is old enough, else once the gap is over. */
  request() {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer !== null) return;
    const wait = Math.max(0, this.last + this.gap - performance.now());
    this.timer = setTimeout(() => this.run(), wait);
  }

  /** Reload now, whatever the gap (first load, a user's action). */
  async now() {
    clearTimeout(this.timer);
    this.timer = null;
    return this.run();
  }

  async run() {
    this.timer = null;
    if (this.closed) return;
    this.running = true;
    const began = performance.now();
    try {
      await this.load();
    } catch (error) {
      console.warn("refresh failed", error);
    } finally {
      const took = performance.now() - began;
      this.gap = Math.min(this.max, Math.max(this.base, took * this.factor));
      this.last = performance.now();
      this.running = false;
    }
    if (this.again) {
      this.again = false;
      this.request();
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
  }
}
