// The REST API from the pages: JSON in and out, errors as ApiFailure, 401 back to the login page.
// Requests carry the session cookie (same origin); nothing here knows a secret.

export class ApiFailure extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Send the browser to the login page, coming back here afterwards. */
export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
}

/**
 * Call the API. `json` is sent as JSON, `form` (a FormData) as multipart.
 * Returns the parsed JSON body (null for 204); throws ApiFailure for error answers.
 */
export async function api(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, headers: { Accept: "application/json" }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    toLogin();
    throw new ApiFailure(401, "unauthenticated", "your session ended: log in again");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    const { code = "http_error", message = `${response.status} ${response.statusText}`, ...rest } =
      error;
    throw new ApiFailure(response.status, code, message, rest);
  }
  return body;
}

/** A ws:// or wss:// URL for a path on this server. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Build an element: el("a", {href: "/", class: "x"}, "text", child...). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A UNIX time (seconds) or ISO string as local date and time. */
export function formatTime(value) {
  if (value === undefined || value === null || value === "") return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** Show an error message in a [role=alert] element (or hide it for null). */
export function showError(node, error) {
  if (!node) return;
  if (error === null || error === undefined) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  node.hidden = false;
  node.textContent = error instanceof Error ? error.message : String(error);
}

/** The URL of a snapshot path as alerts give it. */
export function snapshotUrl(path) {
  return `/api/snapshots/${path.split("/").map(encodeURIComponent).join("/")}`;
}

/** Whether the logged-in user has at least `role` (the page's body says who it is). */
export function hasRole(role) {
  const ranks = { viewer: 0, operator: 1, admin: 2 };
  return (ranks[document.body.dataset.role] ?? -1) >= ranks[role];
}
