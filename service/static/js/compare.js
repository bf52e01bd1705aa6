// Several jobs' curves on one chart (#/compare?ids=a,b): one metric at a time, against training
// steps, fresh rollouts or training time, so a ReMix run and its on-policy baseline line up.

/* global uPlot */

import { getJson } from "./api.js";
import { h, statusBadge } from "./dom.js";

const HEIGHT = 360;
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#4b5563"];
export const METRICS = [
  { key: "reward_mean", label: "Reward (mean)" },
  { key: "eval_accuracy", label: "Held-out accuracy (greedy)" },
  { key: "response_length_fresh", label: "Response length (fresh, tokens)" },
  { key: "kl_ref", label: "KL(π‖ref)" },
];
// Sample efficiency is the point of ReMix: fresh rollouts put runs with different replay on one
// footing, where steps would not. Training time is the sum of the steps' step_s: the metric rows
// keep one row per step, so time lost to a crash and the re-run of its steps is not counted.
export const X_AXES = [
  { key: "step", label: "step" },
  { key: "fresh_rollouts", label: "fresh rollouts" },
  { key: "wall_time", label: "training time (s)" },
];
const METRICS_PAGE = 10_000;
const EVENTS_PAGE = 100;

/** Render the comparison of `ids` into `view`; returns the teardown. */
export function renderCompare(view, ids, { metric, x } = {}) {
  const page = new ComparePage(view, ids, metric, x);
  page.start();
  return () => page.stop();
}

async function allMetrics(jobId) {
  const rows = [];
  for (let from = 0; ;) {
    const page = await getJson(`v1/jobs/${jobId}/metrics?from_step=${from}&limit=${METRICS_PAGE}`);
    rows.push(...page.data);
    if (!page.has_more || !page.data.length) return rows;
    from = page.data.at(-1).step + 1;
  }
}

/** The evaluation before training (step 0) is an event only: no training step reports it. It comes
 * right after `started`, so the first page of events holds it; a long run's later pages are not read. */
async function baselineAccuracy(jobId) {
  const page = await getJson(`v1/jobs/${jobId}/events?limit=${EVENTS_PAGE}`);
  const found = page.data.find((e) => e.kind === "evaluation" && e.step === 0 && typeof e.payload?.accuracy === "number");
  return found ? found.payload.accuracy : null;
}

/** [x, metrics] per step of one job, with the x of every axis, ascending by step. */
export function positions(rows, baseline) {
  let time = 0;
  let rollouts = 0;
  const out = [];
  if (typeof baseline === "number") {
    out.push({ step: 0, fresh_rollouts: 0, wall_time: 0, metrics: { eval_accuracy: baseline } });
  }
  for (const { step, metrics } of [...rows].sort((a, b) => a.step - b.step)) {
    const seconds = metrics.step_s;
    if (typeof seconds === "number" && Number.isFinite(seconds)) time += seconds;
    // Older rows may lack the running total; the per-step count adds up to the same number.
    if (typeof metrics.fresh_rollouts_total === "number") rollouts = metrics.fresh_rollouts_total;
    else if (typeof metrics.fresh_samples === "number") rollouts += metrics.fresh_samples;
    const row = { step, fresh_rollouts: rollouts, wall_time: time, metrics };
    if (step === 0 && out.length) out[0] = { ...row, metrics: { ...out[0].metrics, ...metrics } };
    else out.push(row);
  }
  return out;
}

const finite = (v) => typeof v === "number" && Number.isFinite(v);

/** uPlot's columns: the union of the jobs' x values, and each job's value at them (null elsewhere). */
export function alignedData(series, metric, axis) {
  const perJob = series.map((points) => {
    const byX = new Map();
    for (const p of points) if (finite(p.metrics[metric]) && finite(p[axis])) byX.set(p[axis], p.metrics[metric]);
    return byX;
  });
  const xs = [...new Set(perJob.flatMap((byX) => [...byX.keys()]))].sort((a, b) => a - b);
  return [xs, ...perJob.map((byX) => xs.map((x) => (byX.has(x) ? byX.get(x) : null)))];
}

export const algorithmOf = (job) => job.config?.algorithm?.name ?? "default algorithm";

class ComparePage {
  constructor(view, ids, metric, x) {
    this.ids = ids;
    this.metric = METRICS.some((m) => m.key === metric) ? metric : METRICS[0].key;
    this.x = X_AXES.some((a) => a.key === x) ? x : X_AXES[0].key;
    this.jobs = [];
    this.plot = null;
    this.stopped = false;
    const select = (id, options, value) => h("select", { id },
      options.map((o) => h("option", { value: o.key, selected: o.key === value }, o.label)));
    this.el = {
      metric: select("compare-metric", METRICS, this.metric),
      x: select("compare-x", X_AXES, this.x),
      legend: h("ul", { id: "compare-legend", class: "legend" }),
      chart: h("div", { class: "chart compare-chart", "data-chart": "compare" }),
      error: h("p", { class: "error", role: "alert" }),
    };
    const e = this.el;
    e.metric.addEventListener("change", () => { this.metric = e.metric.value; this.draw(); });
    e.x.addEventListener("change", () => { this.x = e.x.value; this.draw(); });
    view.replaceChildren(
      h("p", {}, h("a", { href: "#/" }, "← all jobs")),
      h("h1", {}, `Compare ${ids.length} jobs`),
      h("div", { class: "facts" },
        h("label", {}, "Metric ", e.metric), h("label", {}, "x-axis ", e.x)),
      e.error, e.legend, e.chart);
    this.resizer = new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: HEIGHT }));
    this.resizer.observe(e.chart);
  }

  width() {
    return Math.max(this.el.chart.clientWidth, 300);
  }

  async start() {
    const loaded = await Promise.all(this.ids.map(async (id) => {
      try {
        const [job, rows, baseline] = await Promise.all([getJson(`v1/jobs/${id}`), allMetrics(id), baselineAccuracy(id)]);
        return { job, points: positions(rows, baseline) };
      } catch (err) {
        return { error: `${id}: ${err.message}` };
      }
    }));
    if (this.stopped) return;
    this.jobs = loaded.filter((j) => !j.error);
    this.el.error.textContent = loaded.filter((j) => j.error).map((j) => `Could not load ${j.error}`).join("; ");
    this.el.legend.replaceChildren(...this.jobs.map(({ job }, i) => h("li", { "data-job-id": job.id },
      h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }),
      h("a", { href: `#/jobs/${job.id}` }, job.name || job.id.slice(0, 8)),
      h("span", { class: "muted" }, algorithmOf(job)),
      statusBadge(job.status),
      h("span", { class: "muted num" }, job.id.slice(0, 8)))));
    this.draw();
  }

  /** Rebuilt per metric and axis: the axis label and scales are fixed when a uPlot is made. */
  draw() {
    if (this.stopped) return;
    // The choice stays in the address (without a hashchange, which would reload everything).
    const params = new URLSearchParams({ ids: this.ids.join(","), metric: this.metric, x: this.x });
    history.replaceState(null, "", `#/compare?${params.toString().replaceAll("%2C", ",")}`);
    const metric = METRICS.find((m) => m.key === this.metric);
    const axis = X_AXES.find((a) => a.key === this.x);
    const data = alignedData(this.jobs.map((j) => j.points), metric.key, axis.key);
    this.plot?.destroy();
    this.el.chart.replaceChildren();
    this.plot = new uPlot({
      title: metric.label,
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [{ label: axis.label }, { label: metric.label }],
      series: [
        { label: axis.label },
        ...this.jobs.map(({ job }, i) => ({
          label: `${job.name || job.id.slice(0, 8)} (${algorithmOf(job)})`,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: true, // held-out accuracy is only measured every few steps
          points: { show: metric.key === "eval_accuracy", size: 6, fill: PALETTE[i % PALETTE.length] },
        })),
      ],
    }, data, this.el.chart);
    // What is drawn, for tests and debugging: the canvas itself cannot be read back as numbers.
    const d = this.el.chart.dataset;
    d.metric = metric.key;
    d.x = axis.key;
    d.xLabel = axis.label;
    d.xMax = data[0].length ? String(data[0].at(-1)) : "";
    d.series = this.jobs.map(({ job }) => job.id).join(" ");
    d.points = data.slice(1).map((column) => column.filter((v) => v !== null).length).join(" ");
    d.last = data.slice(1).map((column) => String(column.filter((v) => v !== null).at(-1) ?? "")).join(" ");
  }

  stop() {
    this.stopped = true;
    this.resizer.disconnect();
    this.plot?.destroy();
  }
}
