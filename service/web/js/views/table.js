// The trial table: one server-side page at a time (sorted, filtered, offset paging), one column
// per parameter; a row opens the trial; ticked rows (kept across pages) can be compared.

import { api } from "../api.js";
import { STATES, badge, count, debounce, duration, h, num, scroller, paramText } from "../dom.js";

const PAGE = 50;

/**
 * studyId; params: parameter names; multiFidelity: show bracket and rung columns; objectives
 * (several objectives, else null): a column per objective instead of Value, and front() the
 * numbers of the Pareto set's trials, whose rows are marked; onOpen(number); onCompare(numbers)
 * with two or more ticked trials.
 * Returns {el, refresh(), showReached(bracket, rung), select(number)}.
 */
export function trialTable({
  studyId,
  params,
  multiFidelity,
  objectives = null,
  front = () => new Set(),
  onOpen,
  onCompare,
}) {
  const view = {
    sort: "number",
    order: "desc",
    offset: 0,
    states: new Set(),
    q: "",
    bracket: null,
    reached: null,
  };
  const ticked = new Set();
  let selected = null;
  let last = null;
  const head = h("tr");
  const body = h("tbody");
  const info = h("span", { class: "note", dataset: { role: "table-total" } });
  const prev = h("button", { type: "button", onclick: () => go(view.offset - PAGE) }, "‹ Prev");
  const next = h("button", { type: "button", onclick: () => go(view.offset + PAGE) }, "Next ›");
  const search = h("input", {
    type: "search",
    name: "q",
    placeholder: "filter: #12, norm=batch, or text",
    "aria-label": "filter trials",
  });
  const group = h("span", { class: "chip", hidden: true });
  const compare = h(
    "button",
    { type: "button", disabled: true, onclick: () => onCompare([...ticked].sort((a, b) => a - b)) },
    "Compare",
  );
  const tickNote = () => {
    compare.textContent = ticked.size ? `Compare ${ticked.size}` : "Compare";
    compare.disabled = ticked.size < 2;
    compare.title = ticked.size < 2 ? "tick two or more trials to compare them" : "";
  };
  tickNote();
  const message = h("span", { class: "note", role: "alert" });

  const tick = (t) =>
    h("input", {
      type: "checkbox",
      name: "compare",
      "aria-label": `compare trial #${t.number}`,
      checked: ticked.has(t.number),
      onclick: (e) => e.stopPropagation(),
      onkeydown: (e) => e.stopPropagation(),
      onchange: (e) => {
        if (e.target.checked) ticked.add(t.number);
        else ticked.delete(t.number);
        tickNote();
      },
    });
  const columns = [
    { key: null, label: "Compare", cell: tick, cls: "tick" },
    { key: "number", label: "#", cell: (t) => String(t.number), cls: "num" },
    { key: "state", label: "State", cell: (t) => badge(t.state) },
    ...(multiFidelity
      ? [
          { key: "bracket", label: "Bracket", cell: (t) => String(t.bracket), cls: "num" },
          { key: "rung", label: "Rung", cell: (t) => String(t.rung), cls: "num" },
        ]
      : []),
    ...params.map((name) => ({
      key: `param:${name}`,
      label: name,
      cell: (t) => paramText(t.params[name]),
      cls: "param",
    })),
    ...(objectives
      ? [
          ...objectives.map((o, i) => ({
            key: null, // the server sorts by value alone
            label: o.metric,
            plain: true,
            cell: (t) => num(t.values ? t.values[i] : null),
            cls: "num",
          })),
          {
            key: null,
            label: "Pareto front",
            plain: true,
            cell: (t) => (onFront.has(t.number) ? h("span", { class: "chip" }, "front") : ""),
          },
        ]
      : [{ key: "value", label: "Value", cell: (t) => num(t.value), cls: "num" }]),
    { key: "epochs", label: "Epochs", cell: (t) => String(t.epochs), cls: "num" },
    { key: "worker", label: "Worker", cell: (t) => t.worker || "—" },
    { key: "duration", label: "Duration", cell: (t) => duration(t.duration_s), cls: "num" },
  ];

  function drawHead() {
    // the header is rebuilt: a sort button that had the keyboard focus keeps it
    const focused = head.contains(document.activeElement)
      ? document.activeElement.closest("th")?.dataset.sort
      : null;
    head.replaceChildren(
      ...columns.map((c) => {
        if (c.key === null)
          return h(
            "th",
            { class: c.cls },
            c.plain ? c.label : h("span", { class: "sr-only" }, c.label),
          );
        const sorted =
          view.sort === c.key ? (view.order === "asc" ? "ascending" : "descending") : null;
        // a button in the header: focusable, and Enter or Space sorts like a click
        return h(
          "th",
          { class: `sortable ${c.cls || ""}`, "aria-sort": sorted, dataset: { sort: c.key } },
          h(
            "button",
            {
              type: "button",
              class: "sort",
              title: `sort by ${c.label}`,
              onclick: () => sortBy(c.key),
            },
            c.label,
          ),
        );
      }),
    );
    if (focused) head.querySelector(`th[data-sort="${CSS.escape(focused)}"] button`)?.focus();
  }

  function sortBy(key) {
    view.order = view.sort === key && view.order === "asc" ? "desc" : "asc";
    view.sort = key;
    go(0);
  }

  function go(offset) {
    view.offset = Math.max(0, offset);
    refresh();
  }

  let onFront = new Set();
  function rowOf(t) {
    const marked = onFront.has(t.number);
    return h(
      "tr",
      {
        class: `clickable${t.number === selected ? " selected" : ""}${marked ? " front" : ""}`,
        dataset: { number: t.number, state: t.state, ...(marked ? { front: "true" } : {}) },
        tabindex: 0,
        onclick: () => onOpen(t.number),
        onkeydown: (e) => e.key === "Enter" && onOpen(t.number),
      },
      columns.map((c) => h("td", { class: c.cls || null }, c.cell(t))),
    );
  }

  let asked = 0;
  async function refresh() {
    drawHead();
    const ask = ++asked; // answers can overtake each other: only the newest question's counts
    let page;
    try {
      page = await api.table(studyId, {
        offset: view.offset,
        limit: PAGE,
        sort: view.sort,
        order: view.order,
        state: [...view.states].join(","),
        q: view.q,
        bracket: view.bracket,
        reached: view.reached,
      });
      if (ask !== asked) return;
      message.textContent = "";
    } catch (err) {
      if (ask !== asked) return;
      message.textContent =
        err
          .fieldErrors()
          .map((e) => e.msg)
          .join("; ") || err.message;
      return;
    }
    last = page;
    onFront = front();
    const end = page.offset + page.items.length;
    info.textContent = page.total
      ? `${count(page.offset + 1)}–${count(end)} of ${count(page.total)}`
      : "no trial matches";
    prev.disabled = page.offset === 0;
    next.disabled = end >= page.total;
    body.replaceChildren(
      ...(page.items.length
        ? page.items.map(rowOf)
        : [
            h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, "No trials to show.")),
          ]),
    );
  }

  search.addEventListener(
    "input",
    debounce(() => {
      view.q = search.value.trim();
      go(0);
    }, 300),
  );
  const stateBoxes = STATES.map((state) =>
    h(
      "label",
      {},
      h("input", {
        type: "checkbox",
        name: "state",
        value: state,
        onchange: (e) => {
          if (e.target.checked) view.states.add(state);
          else view.states.delete(state);
          go(0);
        },
      }),
      state,
    ),
  );

  /** Keep the trials of `bracket` that reached `rung` (null, null: every trial). */
  function showReached(bracket, rung) {
    view.bracket = bracket;
    view.reached = rung;
    group.hidden = bracket === null;
    group.replaceChildren(
      `reached rung ${rung} of bracket ${bracket}`,
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          "aria-label": "show every trial",
          title: "show every trial",
          onclick: () => showReached(null, null),
        },
        "×",
      ),
    );
    go(0);
  }

  const el = h(
    "section",
    { class: "panel", id: "trials", "aria-label": "trials" },
    h("div", { class: "panel-head" }, h("h2", {}, "Trials"), info),
    h("div", { class: "filters" }, search, stateBoxes, group, compare, message),
    scroller("trials table", h("table", { class: "data" }, h("thead", {}, head), body)),
    h("div", { class: "pager" }, prev, next),
  );
  return {
    el,
    refresh,
    showReached,
    select(number) {
      selected = number;
      body
        .querySelectorAll("tr[data-number]")
        .forEach((tr) => tr.classList.toggle("selected", Number(tr.dataset.number) === number));
    },
    get page() {
      return last;
    },
  };
}
