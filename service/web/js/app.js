// Entry point: colour scheme, the token gate (when the server has tokens), and the hash router:
// #/ is the studies list, #/new the list with the launch form open, #/new/ID that form filled
// with a copy of study ID's spec, #/spec the spec reference, #/studies/ID a study,
// #/studies/ID/trials/N a study with trial N open.

import { api, setUnauthorizedHandler } from "./api.js";
import { h, installTips } from "./dom.js";
import { mountStudies } from "./views/studies.js";
import { mountStudy } from "./views/study.js";
import { mountSpecReference } from "./views/reference.js";

const main = document.getElementById("main");
let current = null;

// -- colour scheme: auto (the system's), light or dark; the choice is kept in localStorage ----

const THEMES = ["auto", "light", "dark"];
const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

function applyTheme() {
  const choice = localStorage.getItem("hpo-theme") || "auto";
  const dark = choice === "dark" || (choice === "auto" && systemDark.matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  document.getElementById("theme").textContent = `theme: ${choice}`;
}

function setupTheme() {
  applyTheme();
  systemDark.addEventListener("change", applyTheme);
  document.getElementById("theme").addEventListener("click", () => {
    const choice = localStorage.getItem("hpo-theme") || "auto";
    localStorage.setItem("hpo-theme", THEMES[(THEMES.indexOf(choice) + 1) % THEMES.length]);
    applyTheme();
  });
}

// -- routing ---------------------------------------------------------------------------------

function parse(hash) {
  const study = hash.match(/^#\/studies\/(\d+)(?:\/trials\/(\d+))?\/?$/);
  if (study) {
    return {
      key: `study:${study[1]}`,
      id: Number(study[1]),
      trial: study[2] ? Number(study[2]) : null,
    };
  }
  const launch = hash.match(/^#\/new(?:\/(\d+))?\/?$/);
  if (launch) return { key: "studies", launch: true, clone: launch[1] ? Number(launch[1]) : null };
  if (/^#\/spec\/?$/.test(hash)) return { key: "spec" };
  return { key: "studies" };
}

function mount(target) {
  if (target.key === "studies") return mountStudies(main, target);
  if (target.key === "spec") return mountSpecReference(main);
  return mountStudy(main, target);
}

function route() {
  const target = parse(window.location.hash);
  if (current && current.key === target.key) {
    current.view.update?.(target);
    return;
  }
  current?.view.unmount();
  main.replaceChildren();
  current = { key: target.key, view: mount(target) };
}

// -- token gate ------------------------------------------------------------------------------

function askForToken(message) {
  current?.view.unmount();
  current = null;
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "current-password",
    required: true,
    size: 40,
    "aria-label": "API token",
  });
  const error = h("p", { class: "note", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "panel stack", style: "max-width: 32rem; margin: 3rem auto" },
    h("h2", {}, "This server needs a token"),
    h(
      "p",
      { class: "note" },
      "Enter the value of HPO_API_TOKEN. The page keeps it in a session cookie.",
    ),
    input,
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Open")),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.openSession(input.value);
      route();
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not the user token." : err.message;
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function start() {
  setupTheme();
  installTips();
  setUnauthorizedHandler(() => askForToken("The session ended or the token changed."));
  window.addEventListener("hashchange", route);
  try {
    const session = await api.session();
    if (session.required && !session.valid) {
      askForToken();
      return;
    }
  } catch (err) {
    main.replaceChildren(h("p", { class: "notice" }, `The server did not answer: ${err.message}`));
    return;
  }
  route();
}

start();
