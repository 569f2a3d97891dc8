// DOM building and formatting. Every text reaches the page through text nodes or attribute
// setters, never through HTML parsing, so names, params and messages are always shown as text.

/**
 * h("div", {class: "x", onclick: fn}, "text", child, [more]) builds an element.
 * Attributes named on* become listeners; null / false attributes are left out; children may be
 * strings, numbers, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A horizontally scrolling box for a wide table: focusable, so a keyboard can scroll it. */
export function scroller(label, ...children) {
  return h(
    "div",
    { class: "scroll-x", tabindex: 0, role: "region", "aria-label": label },
    children,
  );
}

export const STATES = ["queued", "running", "paused", "completed", "pruned", "failed"];
export const FINISHED = ["completed", "pruned", "failed"];

export function badge(state) {
  return h("span", { class: `badge state-${state}`, dataset: { state } }, state);
}

/** A number for people: 4 significant digits, exponent when very small or large, "—" if none. */
export function num(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "-∞";
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(digits - 2);
  return String(Number(value.toPrecision(digits)));
}

export function count(n) {
  return Number(n).toLocaleString("en-US");
}

/** "1 completed trial", "2 completed trials". */
export function counted(n, noun) {
  return `${count(n)} ${noun}${Number(n) === 1 ? "" : "s"}`;
}

/** A param value as written in a spec: strings bare, numbers short. */
export function paramText(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return num(value);
  return String(value);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} m`;
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return seconds < 1 ? "just now" : `${duration(seconds)} ago`;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${date} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Call `fn` once calls to the returned function have paused for `ms`. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** The shared tooltip: any element with data-tip shows it on hover. */
export function installTips(root = document) {
  const tip = document.getElementById("tip");
  if (!tip) return;
  root.addEventListener("pointerover", (event) => {
    const target = event.target.closest?.("[data-tip]");
    if (!target) return;
    tip.textContent = target.getAttribute("data-tip");
    tip.hidden = false;
  });
  root.addEventListener("pointermove", (event) => {
    if (tip.hidden) return;
    const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
    tip.style.left = `${x}px`;
    tip.style.top = `${y}px`;
  });
  root.addEventListener("pointerout", (event) => {
    if (event.target.closest?.("[data-tip]")) tip.hidden = true;
  });
}

/** The breadcrumb after the brand: crumbs(["Studies", "#/"], "name"). */
export function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  if (!nav) return;
  const items = [];
  parts.forEach((part, i) => {
    if (i > 0) items.push(" / ");
    items.push(Array.isArray(part) ? h("a", { href: part[1] }, part[0]) : h("span", {}, part));
  });
  fill(nav, items);
}
