// The job list (auto-refreshing) and the form that submits a new job.

import { getJson, postJson } from "./api.js";
import { formatDate, h, metadataTags, statusBadge } from "./dom.js";

const REFRESH_MS = 5000;

/** Render the list into `view`; returns the teardown that stops refreshing. */
export function renderJobList(view) {
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  // Kept across refreshes, which rebuild the rows.
  const picked = new Set();
  const compare = h("button", { type: "button", id: "compare-jobs", disabled: true }, "Compare selected");
  const syncCompare = () => {
    compare.disabled = picked.size < 2;
    compare.textContent = picked.size ? `Compare selected (${picked.size})` : "Compare selected";
  };
  compare.addEventListener("click", () => { location.hash = `#/compare?ids=${[...picked].join(",")}`; });
  const jobRow = (job) => {
    const box = h("input", { type: "checkbox", class: "pick", "aria-label": `select ${job.name || job.id}`,
      checked: picked.has(job.id) });
    box.addEventListener("change", () => {
      if (box.checked) picked.add(job.id);
      else picked.delete(job.id);
      syncCompare();
    });
    return listRow(job, box);
  };
  view.replaceChildren(
    h("section", {},
      h("h1", {}, "Jobs"),
      submitForm(() => refresh()),
      error,
      h("div", { class: "section-head" }, h("span", { class: "muted" }, "Tick jobs to overlay their curves."), compare),
      h("table", { class: "jobs", id: "jobs-table" },
        h("thead", {}, h("tr", {}, ["", "Name", "Status", "Step", "Base model", "Metadata", "Created"].map((t) => h("th", {}, t)))),
        body)));

  async function refresh() {
    try {
      const page = await getJson("v1/jobs?limit=100");
      body.replaceChildren(...page.data.map(jobRow));
      if (!page.data.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No jobs yet.")));
      error.textContent = "";
    } catch (e) {
      error.textContent = `Could not load jobs: ${e.message}`;
    }
  }
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

function listRow(job, box) {
  const link = h("a", { href: `#/jobs/${job.id}` }, job.name || job.id.slice(0, 8));
  return h("tr", { "data-job-id": job.id },
    h("td", {}, box),
    h("td", {}, link),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "num" }, `${job.current_step} / ${job.total_steps}`),
    h("td", {}, job.base_model),
    h("td", { class: "metadata" }, metadataTags(job.metadata)),
    h("td", {}, formatDate(job.created_at)));
}

function submitForm(onSubmitted) {
  const message = h("span", { class: "muted", id: "submit-message" });
  const form = h("form", { class: "submit", id: "submit-job" },
    h("label", {}, "Name ", h("input", { name: "name", maxlength: 300, placeholder: "my run" })),
    h("label", {}, "Steps ", h("input", { name: "total_steps", type: "number", min: 1, value: 20, required: true })),
    h("label", { class: "wide" }, "Config (JSON, optional) ",
      h("textarea", { name: "config", rows: 2, placeholder: '{"algorithm": {"off_policy_fraction": 0.5}}' })),
    h("label", {}, "Metadata (JSON, optional) ",
      h("textarea", { name: "metadata", rows: 2, placeholder: '{"experiment": "baseline"}' })),
    h("button", { type: "submit" }, "Submit job"),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const config = data.get("config").trim() ? JSON.parse(data.get("config")) : {};
      config.total_steps = Number(data.get("total_steps"));
      const metadata = data.get("metadata").trim() ? JSON.parse(data.get("metadata")) : {};
      const job = await postJson("v1/jobs", { name: data.get("name"), config, metadata });
      message.textContent = `Submitted ${job.id}`;
      form.reset();
      onSubmitted();
    } catch (e) {
      message.textContent = `Not submitted: ${e.message}`;
    }
  });
  return form;
}
