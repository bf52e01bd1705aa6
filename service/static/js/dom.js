// Tiny DOM helpers. Text always goes through textContent: job names and model completions are
// untrusted and must never be parsed as HTML.

/** h("td", {class: "x"}, "text", childNode, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const statusBadge = (status) => h("span", { class: `status status-${status}` }, status);

export function formatDate(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function formatNumber(v, digits = 3) {
  return typeof v === "number" ? Number(v.toFixed(digits)).toString() : "–";
}

/** A job's metadata as key=value tags (both parts are untrusted text). */
export function metadataTags(metadata) {
  const entries = Object.entries(metadata ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return [h("span", { class: "muted" }, "–")];
  return entries.map(([key, value]) =>
    h("span", { class: "tag", "data-key": key, title: `${key}=${value}` }, `${key}=${value}`));
}

export function formatCount(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

export function formatSeconds(s) {
  if (typeof s !== "number") return "–";
  if (s < 120) return `${Number(s.toFixed(1))} s`;
  if (s < 7200) return `${Number((s / 60).toFixed(1))} min`;
  return `${Number((s / 3600).toFixed(1))} h`;
}
