// One job: live charts fed by the SSE stream, sampled completions, checkpoints and the event log.

import { apiFetch, downloadFile, getJson } from "./api.js";
import { StepChart } from "./charts.js";
import { formatBytes, formatCount, formatDate, formatNumber, formatSeconds, h, metadataTags, statusBadge } from "./dom.js";
import { followStream } from "./sse.js";

const CHARTS = [
  { title: "Reward", series: [{ key: "reward_mean", label: "mean reward", color: "#2563eb" }] },
  { title: "Accuracy", series: [
    { key: "accuracy", label: "train (sampled)", color: "#16a34a" },
    { key: "eval_accuracy", label: "eval (greedy)", color: "#9333ea", dots: true },
  ] },
  { title: "Response length (tokens)", series: [
    { key: "response_length_fresh", label: "fresh", color: "#0891b2" },
    { key: "response_length_replay", label: "replayed", color: "#ea580c" },
  ] },
  { title: "KL terms and λ", rightLabel: "λ", series: [
    { key: "kl_ref", label: "KL(π‖ref)", color: "#dc2626" },
    { key: "kl_prev", label: "KL(π‖prev)", color: "#ca8a04" },
    { key: "lambda", label: "λ", color: "#6b7280", right: true },
  ] },
  { title: "Rollouts (cumulative)", series: [
    { key: "fresh_rollouts_total", label: "fresh", color: "#0891b2" },
    { key: "replayed_samples_total", label: "replayed", color: "#ea580c" },
  ] },
];
// One line per reward function of the job (its reward/<name>/mean step metric) and, dashed on the
// right axis, the fraction of samples it failed on (reward/<name>/error_rate); built from the keys.
const REWARD_CHART = "Reward functions";
const REWARD_KEY = /^reward\/(.+)\/(mean|error_rate)$/;
const PALETTE = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#dc2626", "#4b5563"];
const MAX_SAMPLES = 24;
const MAX_EVENTS = 100;
const RENDER_DELAY_MS = 150; // batch bursts of messages (a finished job replays its whole history)
// Usage is re-read as steps arrive, but at most this often: each read sums the job's usage rows.
const USAGE_REFRESH_MS = 2000;
const USAGE = [
  { key: "fresh_rollouts", label: "Fresh rollouts", format: formatCount },
  { key: "generated_tokens", label: "Generated tokens", format: formatCount },
  { key: "trained_tokens", label: "Trained tokens", format: formatCount },
  { key: "device_seconds", label: "Device time", format: formatSeconds },
];
const CANCELLABLE = new Set(["queued", "running", "pausing", "paused"]);
const LIFECYCLE = new Set([
  "queued", "started", "resumed", "cancelling", "succeeded", "failed", "cancelled", "stalled",
  "pause_requested", "paused", "resume_requested",
]);

/** The metric names of a job's reward functions, in order: `name`, then `name#2`... for a repeat. */
function rewardKeys(functions) {
  const keys = [];
  for (const { name } of functions) {
    let key = name;
    for (let i = 2; keys.includes(key); i += 1) key = `${name}#${i}`;
    keys.push(key);
  }
  return keys;
}

/** Render the job page into `view`; returns the teardown that closes the stream. */
export function renderJobPage(view, jobId) {
  const page = new JobPage(view, jobId);
  page.start();
  return () => page.stop();
}

class JobPage {
  constructor(view, jobId) {
    this.jobId = jobId;
    this.base = `v1/jobs/${jobId}`;
    this.rows = new Map(); // step -> metrics
    this.abort = new AbortController();
    this.renderTimer = null;
    this.el = {
      title: h("h1", {}, "Job"),
      status: h("span", { id: "job-status" }),
      progress: h("span", { id: "job-progress", class: "num" }),
      metricCount: h("span", { id: "metric-count", class: "num" }, "0"),
      phase: h("span", { id: "phase" }, "–"),
      reincarnation: h("span", { id: "reincarnation" }, "not yet"),
      stream: h("span", { id: "stream-state", class: "muted" }, "connecting…"),
      cancel: h("button", { type: "button", hidden: true, onclick: () => this.cancel() }, "Cancel job"),
      charts: h("div", { class: "charts" }),
      samples: h("ol", { id: "samples", class: "samples" }),
      checkpoints: h("tbody", { id: "checkpoints" }),
      // The per-step `samples` events repeat what the completions panel shows: hidden by default.
      events: h("ol", { id: "events", class: "events hide-samples" }),
      showSamples: h("input", { type: "checkbox", id: "show-sample-events" }),
      metadata: h("span", { id: "job-metadata", class: "tags" }),
      usage: Object.fromEntries(USAGE.map(({ key }) => [key, h("span", { class: "num", "data-usage": key }, "–")])),
      error: h("p", { class: "error", role: "alert" }),
    };
    this.usageTimer = null;
    this.usageReading = false;
    this.usageAgain = false;
    this.usageReadAt = 0;
    const e = this.el;
    view.replaceChildren(
      h("p", {}, h("a", { href: "#/" }, "← all jobs")),
      e.title,
      h("div", { class: "facts" },
        h("span", {}, "Status ", e.status), h("span", {}, "Step ", e.progress),
        h("span", {}, "Steps received ", e.metricCount), h("span", {}, "Phase ", e.phase),
        h("span", {}, "Reincarnation ", e.reincarnation), e.stream, e.cancel),
      h("div", { class: "facts", id: "job-usage" },
        ...USAGE.map(({ key, label }) => h("span", {}, `${label} `, e.usage[key]))),
      h("div", { class: "facts" }, h("span", {}, "Metadata ", e.metadata)),
      e.error,
      e.charts,
      h("div", { class: "panels" },
        h("section", {}, h("h2", {}, "Sampled completions"), e.samples),
        h("section", {},
          h("h2", {}, "Checkpoints"),
          h("table", {}, h("thead", {}, h("tr", {}, ["Step", "Size", "Eval", "Saved", ""].map((t) => h("th", {}, t)))),
            e.checkpoints),
          h("div", { class: "section-head" }, h("h2", {}, "Events"),
            h("label", { class: "muted" }, e.showSamples, " show samples events")),
          e.events)));
    e.showSamples.addEventListener("change", () => e.events.classList.toggle("hide-samples", !e.showSamples.checked));
    this.charts = CHARTS.map((spec) => {
      const box = h("div", { class: "chart", "data-chart": spec.title });
      e.charts.append(box);
      return new StepChart(box, spec);
    });
    this.rewardChart = null; // {names, chart}, made once the first reward/<name>/* metric arrives
  }

  /** The per-reward chart, (re)built when the set of reward names in the metrics changes. */
  syncRewardChart(steps) {
    const names = [];
    for (const step of steps) {
      for (const key of Object.keys(this.rows.get(step))) {
        const match = REWARD_KEY.exec(key);
        if (match && !names.includes(match[1])) names.push(match[1]);
      }
    }
    // In the order of the job's reward functions (the database does not keep the order of metric keys).
    const order = rewardKeys(this.job?.config?.reward?.functions ?? []);
    const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
    names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    if (!names.length || this.rewardChart?.names.join("\n") === names.join("\n")) return;
    const series = names.flatMap((name, i) => [
      { key: `reward/${name}/mean`, label: `${name}`, color: PALETTE[i % PALETTE.length] },
      { key: `reward/${name}/error_rate`, label: `${name} errors`, color: PALETTE[i % PALETTE.length],
        right: true, dash: [6, 4] },
    ]);
    let box = this.el.charts.querySelector(`[data-chart="${REWARD_CHART}"]`);
    const markers = this.charts[0].markers;
    if (this.rewardChart) {
      this.charts = this.charts.filter((c) => c !== this.rewardChart.chart);
      this.rewardChart.chart.destroy();
      box.replaceChildren();
    } else {
      box = h("div", { class: "chart", "data-chart": REWARD_CHART });
      this.el.charts.children[0].after(box); // next to the total reward
    }
    const chart = new StepChart(box, { title: REWARD_CHART, rightLabel: "error rate", series });
    markers.forEach((m) => chart.mark(m.step, m.label));
    this.rewardChart = { names, chart };
    this.charts.splice(1, 0, chart);
  }

  start() {
    this.refreshJob();
    this.refreshCheckpoints();
    followStream(`${this.base}/stream`, { onMessage: (m) => this.onMessage(m), signal: this.abort.signal })
      .then(() => { if (!this.abort.signal.aborted) this.el.stream.textContent = "stream ended"; })
      .catch((err) => { this.el.error.textContent = `Live updates stopped: ${err.message}`; });
  }

  stop() {
    this.abort.abort();
    clearTimeout(this.renderTimer);
    clearTimeout(this.usageTimer);
    this.charts.forEach((c) => c.destroy());
  }

  onMessage({ event, data }) {
    this.el.stream.textContent = "live";
    if (event === "metric") {
      this.merge(data.step, data.metrics);
      return;
    }
    if (event === "end") {
      this.refreshJob();
      this.refreshCheckpoints();
      return;
    }
    this.addEvent(event, data);
    const step = data.payload?.step ?? data.step;
    if (event === "evaluation" && typeof data.payload?.accuracy === "number") {
      this.merge(data.step ?? 0, { eval_accuracy: data.payload.accuracy });
    } else if (event === "reincarnated") {
      this.el.reincarnation.textContent = `at step ${step}`;
      this.charts.forEach((c) => c.mark(step, "reincarnation"));
    } else if (event === "samples") {
      this.addSamples(data.step, data.payload?.samples ?? []);
    } else if (event === "checkpoint") {
      // The event may precede the checkpoint row: look again shortly after.
      this.refreshCheckpoints();
      setTimeout(() => this.refreshCheckpoints(), 2000);
    } else if (LIFECYCLE.has(event)) {
      this.refreshJob();
    }
  }

  merge(step, metrics) {
    this.rows.set(step, { ...this.rows.get(step), ...metrics });
    if (!this.renderTimer) this.renderTimer = setTimeout(() => this.render(), RENDER_DELAY_MS);
  }

  render() {
    this.renderTimer = null;
    const steps = [...this.rows.keys()].sort((a, b) => a - b);
    this.syncRewardChart(steps);
    this.charts.forEach((c) => c.update(steps, this.rows));
    const trained = steps.filter((s) => this.rows.get(s).phase !== undefined);
    this.el.metricCount.textContent = String(trained.length);
    this.scheduleUsage();
    const last = this.rows.get(trained.at(-1));
    if (last) {
      this.el.phase.textContent = last.phase;
      this.el.progress.dataset.step = String(last.step ?? trained.at(-1));
      this.showProgress(trained.at(-1));
    }
  }

  showProgress(step) {
    const total = this.job?.total_steps ?? "?";
    this.el.progress.textContent = `${Math.max(step ?? 0, this.job?.current_step ?? 0)} / ${total}`;
  }

  async refreshJob() {
    try {
      this.job = await getJson(this.base);
      this.el.title.textContent = this.job.name || `Job ${this.job.id}`;
      this.el.status.replaceChildren(statusBadge(this.job.status));
      this.el.cancel.hidden = !CANCELLABLE.has(this.job.status);
      this.el.metadata.replaceChildren(...metadataTags(this.job.metadata));
      this.showProgress(Number(this.el.progress.dataset.step ?? 0));
      this.el.error.textContent = this.job.error ? `Error: ${this.job.error}` : "";
      if (this.rows.size && !this.renderTimer) this.render(); // e.g. reward charts in the config's order
    } catch (err) {
      this.el.error.textContent = `Could not load the job: ${err.message}`;
    }
    this.scheduleUsage();
  }

  /** Read the usage now, or once USAGE_REFRESH_MS has passed since the last read. */
  scheduleUsage() {
    // Steps that land while a read is in flight may be missed by it: read once more after it.
    if (this.usageReading) this.usageAgain = true;
    if (this.usageTimer || this.usageReading) return;
    const wait = Math.max(0, this.usageReadAt + USAGE_REFRESH_MS - Date.now());
    this.usageTimer = setTimeout(() => this.refreshUsage(), wait);
  }

  async refreshUsage() {
    this.usageTimer = null;
    this.usageReading = true;
    this.usageReadAt = Date.now();
    try {
      const usage = await getJson(`${this.base}/usage`);
      for (const { key, format } of USAGE) {
        this.el.usage[key].textContent = format(usage[key]);
        this.el.usage[key].dataset.value = String(usage[key]);
      }
    } catch (err) {
      if (!this.abort.signal.aborted) this.el.error.textContent = `Could not load usage: ${err.message}`;
    } finally {
      this.usageReading = false;
    }
    if (this.usageAgain && !this.abort.signal.aborted) {
      this.usageAgain = false;
      this.scheduleUsage();
    }
  }

  async refreshCheckpoints() {
    try {
      const { data } = await getJson(`${this.base}/checkpoints`);
      this.el.checkpoints.replaceChildren(...data.map((c) => this.checkpointRow(c)));
    } catch (err) {
      this.el.error.textContent = `Could not load checkpoints: ${err.message}`;
    }
  }

  checkpointRow(c) {
    const button = h("button", { type: "button", class: "download", "data-step": c.step }, "Download .tar.gz");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await downloadFile(c.download_url);
      } catch (err) {
        this.el.error.textContent = `Download failed: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    });
    return h("tr", {},
      h("td", { class: "num" }, c.step), h("td", { class: "num" }, formatBytes(c.size_bytes)),
      h("td", { class: "num" }, formatNumber(c.eval_score)), h("td", {}, formatDate(c.created_at)),
      h("td", {}, button));
  }

  addSamples(step, samples) {
    const items = samples.map((s) => {
      const good = typeof s.reward === "number" && s.reward > 0;
      return h("li", { class: `sample ${good ? "good" : "bad"}` },
        h("div", { class: "sample-head" },
          h("span", {}, `step ${step}`), h("span", { class: "reward" }, `reward ${formatNumber(s.reward)}`),
          h("span", { class: "muted" }, `answer ${s.answer}`),
          s.truncated ? h("span", { class: "muted" }, "truncated") : null),
        h("pre", { class: "prompt" }, s.prompt),
        h("pre", { class: "completion" }, s.completion));
    });
    this.el.samples.prepend(...items);
    while (this.el.samples.children.length > MAX_SAMPLES) this.el.samples.lastElementChild.remove();
  }

  addEvent(kind, data) {
    this.el.events.prepend(h("li", { "data-kind": kind },
      h("span", { class: `kind kind-${kind}` }, kind),
      h("span", { class: "num" }, data.step ?? ""),
      h("span", {}, data.message ?? "")));
    while (this.el.events.children.length > MAX_EVENTS) this.el.events.lastElementChild.remove();
  }

  async cancel() {
    try {
      await apiFetch(`${this.base}/cancel`, { method: "POST" });
      this.refreshJob();
    } catch (err) {
      this.el.error.textContent = `Cancel failed: ${err.message}`;
    }
  }
}
