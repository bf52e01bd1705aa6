// The JSON API seen from the dashboard: the API key lives in sessionStorage (cleared when the
// tab closes) and is sent as a Bearer header on every call, downloads and the SSE stream included.

const KEY_NAME = "remix.apiKey";
// The API root is the parent of /dashboard/, so the dashboard also works behind a path prefix.
const API_ROOT = new URL("../", location.href);

export const getKey = () => sessionStorage.getItem(KEY_NAME);
export const setKey = (key) => sessionStorage.setItem(KEY_NAME, key);
export const clearKey = () => sessionStorage.removeItem(KEY_NAME);

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), API_ROOT);
}

export async function apiFetch(path, options = {}) {
  const headers = new Headers(options.headers);
  headers.set("Authorization", `Bearer ${getKey()}`);
  const response = await fetch(apiUrl(path), { ...options, headers });
  if (response.ok) return response;
  if (response.status === 401) window.dispatchEvent(new Event("remix:unauthorized"));
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail; // problem+json
  } catch { /* not JSON */ }
  throw new ApiError(response.status, detail);
}

export const getJson = async (path) => (await apiFetch(path)).json();

export async function postJson(path, body) {
  const headers = { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() };
  const response = await apiFetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  return response.json();
}

/** Download with the Authorization header: fetch into a blob, then click a temporary link. */
export async function downloadFile(path) {
  const response = await apiFetch(path);
  const disposition = response.headers.get("Content-Disposition") ?? "";
  const filename = disposition.match(/filename="([^"]+)"/)?.[1] ?? "download";
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
