// The events page: the alert history with filters, paged by cursor, with snapshots.

import { api, el, formatTime, showError, snapshotUrl } from "./api.js";
import { setUpNav } from "./nav.js";

setUpNav();
const form = document.getElementById("event-filters");
const body = document.querySelector("#events tbody");
const empty = document.getElementById("events-empty");
const error = document.getElementById("events-error");
const newestButton = document.getElementById("events-newest");
const olderButton = document.getElementById("events-older");
let nextCursor = null;

function filters() {
  const data = new FormData(form);
  const query = new URLSearchParams();
  for (const key of ["stream", "person_id", "type", "limit"]) {
    const value = String(data.get(key) || "").trim();
    if (value) query.set(key, value);
  }
  for (const key of ["since", "until"]) {
    const value = data.get(key);
    if (value) query.set(key, String(new Date(value).getTime() / 1000));
  }
  return query;
}

function row(event) {
  const snapshot = event.snapshot
    ? el(
        "a",
        {
          href: event.frame_snapshot_url || snapshotUrl(event.frame_snapshot || event.snapshot),
          target: "_blank",
        },
        el("img", {
          src: event.snapshot_url || snapshotUrl(event.snapshot),
          alt: "face snapshot",
          loading: "lazy",
          class: "thumb",
        }),
      )
    : "";
  const similarity = event.similarity === null || event.similarity === undefined ? "—" : Number(event.similarity).toFixed(3);
  return el(
    "tr",
    { dataset: { id: event.id, type: event.type } },
    el("td", {}, formatTime(event.ts)),
    el("td", {}, el("span", { class: `badge alert-${event.type}` }, event.type)),
    el("td", {}, el("a", { href: `/live/${encodeURIComponent(event.stream)}` }, event.stream)),
    el("td", {}, event.person || (event.person_id ? `#${event.person_id}` : "—")),
    el("td", {}, similarity),
    el("td", {}, snapshot),
  );
}

async function load(cursor) {
  const query = filters();
  if (cursor) query.set("cursor", cursor);
  try {
    const page = await api(`/api/events?${query}`);
    const items = page.items || [];
    body.replaceChildren(...items.map(row));
    empty.hidden = items.length > 0;
    nextCursor = page.next_cursor || null;
    olderButton.disabled = !nextCursor;
    newestButton.disabled = !cursor;
    showError(error, null);
  } catch (failure) {
    showError(error, failure);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load(null);
});
newestButton.addEventListener("click", () => load(null));
olderButton.addEventListener("click", () => nextCursor && load(nextCursor));
load(null);
