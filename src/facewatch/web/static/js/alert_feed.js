// A live list of alerts, newest first: the recent history, then the alerts WebSocket.

import { api, el, formatTime, snapshotUrl, wsUrl } from "./api.js";

const KEEP = 50;

function alertItem(alert) {
  const who = alert.person || (alert.type === "unknown" ? "unknown person" : "—");
  const similarity =
    alert.similarity === null || alert.similarity === undefined
      ? ""
      : ` · ${Number(alert.similarity).toFixed(2)}`;
  return el(
    "li",
    {
      class: `alert alert-${alert.type}`,
      dataset: { id: alert.id, type: alert.type, person: alert.person || "", stream: alert.stream },
    },
    alert.snapshot
      ? el("img", { src: alert.snapshot_url || snapshotUrl(alert.snapshot), alt: `face of ${who}` })
      : el("span", { class: "no-snapshot" }),
    el(
      "div",
      { class: "what" },
      el("strong", {}, who),
      el("span", { class: "badge" }, alert.type),
      el("div", { class: "when" }, `${formatTime(alert.ts)} · ${alert.stream}${similarity}`),
    ),
  );
}

/**
 * Fill `list` with the alerts of `stream` (all streams when omitted) and keep it current.
 * Returns {close()}.
 */
export function alertFeed(list, { stream } = {}) {
  const seen = new Set();
  let newest = null;
  let socket = null;
  let closed = false;
  let retry = 0;
  let retryTimer = null;

  function add(alert, { front }) {
    if (seen.has(alert.id)) return;
    seen.add(alert.id);
    if (newest === null || alert.id > newest) newest = alert.id;
    const item = alertItem(alert);
    if (front) list.prepend(item);
    else list.append(item);
    while (list.children.length > KEEP) list.lastElementChild.remove();
  }

  async function history() {
    const query = new URLSearchParams({ limit: "20" });
    if (stream) query.set("stream", stream);
    try {
      const page = await api(`/api/events?${query}`);
      for (const alert of page.items || []) add(alert, { front: false });
    } catch {
      // The history is a nicety: live alerts still come.
    }
  }

  function connect() {
    if (closed) return;
    const query = new URLSearchParams();
    if (stream) query.set("stream", stream);
    // Always resume: "0" (before every id) when the history was empty, so an alert raised
    // between the history's query and this subscription is replayed, not lost.
    query.set("after", newest || "0");
    socket = new WebSocket(wsUrl(`/ws/alerts?${query}`));
    socket.addEventListener("open", () => {
      retry = 0;
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "alert") add(message.alert, { front: true });
    });
    socket.addEventListener("close", (event) => {
      if (closed || event.code === 1008 || event.code === 1003) return; // refused: retrying won't help
      retryTimer = setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
    });
  }

  history().then(connect);
  return {
    close() {
      closed = true;
      clearTimeout(retryTimer);
      socket?.close(1000);
    },
  };
}
