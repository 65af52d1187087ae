// The live view page: /live/{stream}.

import { api } from "./api.js";
import { showLive } from "./live_panel.js";
import { setUpNav } from "./nav.js";

setUpNav();
const root = document.querySelector(".live-grid");
const streamId = root.dataset.stream;
const state = document.getElementById("stream-state");
const name = document.getElementById("stream-name");

async function refresh() {
  try {
    const stream = await api(`/api/streams/${encodeURIComponent(streamId)}`);
    name.textContent = stream.name || stream.id;
    state.textContent = stream.state;
    state.dataset.state = stream.state;
  } catch (error) {
    state.textContent = error.status === 404 ? "removed" : "unknown";
    state.dataset.state = state.textContent;
  }
}

refresh();
setInterval(refresh, 3000);
showLive(root, streamId);
