// The streams page: every stream with its live status (refreshed every 2 s); operators add,
// pause, resume and delete streams.

import { api, el, hasRole, showError } from "./api.js";
import { setUpNav } from "./nav.js";

setUpNav();
const body = document.querySelector("#streams tbody");
const empty = document.getElementById("streams-empty");
const listError = document.getElementById("streams-error");
const form = document.getElementById("add-stream");
const operator = hasRole("operator");

const fixed = (value, digits = 1) =>
  value === null || value === undefined ? "—" : Number(value).toFixed(digits);

function statusOf(stream) {
  return stream.status || {};
}

async function act(stream, action) {
  const path = `/api/streams/${encodeURIComponent(stream.id)}`;
  try {
    if (action === "delete") {
      if (!confirm(`Delete the stream ${stream.name || stream.id}?`)) return;
      await api(path, { method: "DELETE" });
    } else {
      await api(`${path}/${action}`, { method: "POST" });
    }
    showError(listError, null);
  } catch (error) {
    showError(listError, error);
  }
  refresh();
}

function row(stream) {
  const status = statusOf(stream);
  const state = stream.state || status.state || "unknown";
  const dropped = Object.values(status.dropped || {}).reduce((a, b) => a + b, 0);
  const paused = state === "paused";
  const actions = el("td", { class: "actions" }, el("a", { href: `/live/${encodeURIComponent(stream.id)}` }, "Live"));
  if (operator) {
    actions.append(
      el("button", { type: "button", onclick: () => act(stream, paused ? "resume" : "pause") }, paused ? "Resume" : "Pause"),
      el("button", { type: "button", class: "danger", onclick: () => act(stream, "delete") }, "Delete"),
    );
  }
  return el(
    "tr",
    { dataset: { stream: stream.id, state } },
    el("td", {}, el("strong", {}, stream.name || stream.id), el("div", { class: "muted" }, stream.url || "")),
    el("td", {}, el("span", { class: "badge", dataset: { state } }, state)),
    el("td", {}, fixed(status.input_fps)),
    el("td", {}, fixed(status.processed_fps)),
    el("td", {}, String(dropped)),
    el("td", {}, status.lag_s === null || status.lag_s === undefined ? "—" : `${fixed(status.lag_s * 1000, 0)} ms`),
    el("td", { class: "muted" }, status.last_error || ""),
    actions,
  );
}

async function refresh() {
  try {
    const page = await api("/api/streams");
    const items = page.items || [];
    body.replaceChildren(...items.map(row));
    empty.hidden = items.length > 0;
    if (listError.dataset.kind === "load") showError(listError, null);
  } catch (error) {
    listError.dataset.kind = "load";
    showError(listError, error);
  }
}

form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = form.querySelector(".error");
  const data = new FormData(form);
  const request = {
    name: data.get("name").trim(),
    url: data.get("url").trim(),
    loop: data.get("loop") === "on",
    enabled: data.get("enabled") === "on",
  };
  if (data.get("fps_cap")) request.fps_cap = Number(data.get("fps_cap"));
  try {
    await api("/api/streams", { method: "POST", json: request });
    form.reset();
    showError(error, null);
    refresh();
  } catch (failure) {
    showError(error, failure);
  }
});

refresh();
setInterval(refresh, 2000);
