// Entry point: asks for the API key once per tab, then routes #/ (job list), #/jobs/<id> and
// #/compare?ids=<id>,<id>[&metric=...&x=...].

import { clearKey, getJson, getKey, setKey } from "./api.js";
import { renderCompare } from "./compare.js";
import { h } from "./dom.js";
import { renderJobPage } from "./job.js";
import { renderJobList } from "./jobs.js";

const view = document.getElementById("view");
const forgetButton = document.getElementById("forget-key");
let teardown = () => {};

function route() {
  teardown();
  teardown = () => {};
  forgetButton.hidden = !getKey();
  if (!getKey()) {
    renderLogin();
    return;
  }
  const match = location.hash.match(/^#\/jobs\/([0-9a-fA-F-]{36})$/);
  const compare = location.hash.match(/^#\/compare\?(.*)$/);
  if (match) {
    teardown = renderJobPage(view, match[1]);
  } else if (compare) {
    const params = new URLSearchParams(compare[1]);
    const ids = (params.get("ids") ?? "").split(",").filter((id) => /^[0-9a-fA-F-]{36}$/.test(id));
    teardown = renderCompare(view, [...new Set(ids)], { metric: params.get("metric"), x: params.get("x") });
  } else {
    teardown = renderJobList(view);
  }
}

function renderLogin() {
  const error = h("p", { class: "error", role: "alert" });
  const input = h("input", { type: "password", name: "api_key", id: "api-key", required: true,
    autocomplete: "off", placeholder: "rmx_…", size: 48 });
  const form = h("form", { id: "login", class: "login" },
    h("h1", {}, "API key"),
    h("p", { class: "muted" }, "The key stays in this browser tab (sessionStorage) and is sent only to this server."),
    input, h("button", { type: "submit" }, "Continue"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    try {
      await getJson("v1/jobs?limit=1"); // proves the key before showing anything
      route();
    } catch (e) {
      clearKey();
      error.textContent = `Key not accepted: ${e.message}`;
    }
  });
  view.replaceChildren(form);
  input.focus();
}

forgetButton.addEventListener("click", () => { clearKey(); route(); });
window.addEventListener("hashchange", route);
// A revoked key mid-session: ask again (the login form itself handles its own 401).
window.addEventListener("remix:unauthorized", () => { if (document.getElementById("login") === null) { clearKey(); route(); } });
route();
