// Line charts over training steps, drawn with uPlot, with dashed vertical step markers
// (policy reincarnation). A chart is declared by the metric keys it plots.

/* global uPlot */

const HEIGHT = 220;

export class StepChart {
  /**
   * @param {HTMLElement} container
   * @param {{title: string, series: {key: string, label: string, color: string, right?: boolean,
   *          dots?: boolean, dash?: number[]}[], rightLabel?: string}} spec
   */
  constructor(container, spec) {
    this.container = container;
    this.spec = spec;
    this.markers = [];
    this.points = 0;
    const hasRight = spec.series.some((s) => s.right);
    const options = {
      title: spec.title,
      width: Math.max(container.clientWidth, 300),
      height: HEIGHT,
      scales: { x: { time: false }, ...(hasRight ? { right: { range: [0, 1] } } : {}) },
      axes: [
        { label: "step" },
        {},
        ...(hasRight ? [{ scale: "right", side: 1, label: spec.rightLabel, grid: { show: false } }] : []),
      ],
      series: [
        { label: "step" },
        ...spec.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          ...(s.dash ? { dash: s.dash } : {}),
          scale: s.right ? "right" : "y",
          spanGaps: true, // sparse series (evaluation) still draw as a line
          points: { show: s.dots ?? false, size: 6, fill: s.color },
        })),
      ],
      plugins: [markerPlugin(() => this.markers)],
      hooks: { setCursor: [() => this.showLatestInLegend()] },
    };
    this.plot = new uPlot(options, this.emptyData(), container);
    this.resizer = new ResizeObserver(() =>
      this.plot.setSize({ width: Math.max(container.clientWidth, 300), height: HEIGHT }));
    this.resizer.observe(container);
  }

  emptyData() {
    return [[], ...this.spec.series.map(() => [])];
  }

  /** Replace the data: `steps` ascending, `rows` maps a step to its metrics object. */
  update(steps, rows) {
    const value = (step, key) => {
      const v = rows.get(step)?.[key];
      return typeof v === "number" && Number.isFinite(v) ? v : null;
    };
    const columns = this.spec.series.map((s) => steps.map((step) => value(step, s.key)));
    // Steps where none of this chart's keys has a value are left out (e.g. replay after reincarnation).
    const keep = steps.map((_, i) => columns.some((column) => column[i] !== null));
    const pick = (column) => column.filter((_, i) => keep[i]);
    this.plot.setData([pick(steps), ...columns.map(pick)]);
    this.points = keep.filter(Boolean).length;
    this.showLatestInLegend();
    this.container.dataset.points = String(this.points); // read by tests and handy when debugging
    this.container.dataset.series = this.spec.series.map((s) => s.key).join(" ");
  }

  /** Without a hovering cursor the legend shows the latest values instead of "--". */
  showLatestInLegend() {
    if (this.plot && this.points && this.plot.cursor.idx == null) this.plot.setLegend({ idx: this.points - 1 });
  }

  mark(step, label) {
    if (this.markers.some((m) => m.step === step)) return;
    this.markers.push({ step, label });
    this.container.dataset.markers = String(this.markers.length);
    this.plot.redraw(false);
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
  }
}

function markerPlugin(getMarkers) {
  const draw = (u) => {
    const ctx = u.ctx;
    const dpr = devicePixelRatio || 1;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.strokeStyle = "#b03a2e";
    ctx.fillStyle = "#b03a2e";
    ctx.lineWidth = 1.5 * dpr;
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    for (const { step, label } of getMarkers()) {
      const x = Math.round(u.valToPos(step, "x", true));
      if (!Number.isFinite(x) || x < left || x > left + width) continue;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.fillText(label, x + 4 * dpr, top + 12 * dpr);
    }
    ctx.restore();
  };
  return { hooks: { draw: [draw] } };
}
