// A stream's live video with its faces drawn over it and its alert feed, as the live view and
// the publish page show it. Reconnects the video when the connection fails.

import { alertFeed } from "./alert_feed.js";
import { attachOverlay } from "./overlay.js";
import { receiveStream } from "./webrtc.js";

/**
 * Show stream `streamId` in `root` (which holds #video, #overlay, #video-status, #alerts and
 * #overlay-faces). Returns {close()}.
 */
export function showLive(root, streamId) {
  const video = root.querySelector("#video");
  const canvas = root.querySelector("#overlay");
  const status = root.querySelector("#video-status");
  const faces = document.getElementById("overlay-faces");
  let pc = null;
  let closed = false;
  let retryTimer = null;
  let retry = 0;

  function say(text) {
    status.textContent = text;
    status.hidden = !text;
  }

  async function connect() {
    if (closed) return;
    say("Connecting…");
    try {
      pc = await receiveStream(streamId, video, (state) => {
        if (state === "connected") {
          retry = 0;
          say("");
        } else if (state === "failed" || state === "closed") {
          say("Video lost; reconnecting…");
          again();
        }
      });
    } catch (error) {
      say(`No video: ${error.message}`);
      if (error.status !== 404 && error.status !== 403) again();
    }
  }

  function again() {
    if (closed || retryTimer !== null) return;
    pc?.close();
    retryTimer = setTimeout(() => {
      retryTimer = null;
      connect();
    }, Math.min(10000, 1000 * 2 ** retry++));
  }

  video.addEventListener("playing", () => say(""));
  const overlay = attachOverlay({ video, canvas, list: faces, streamId, onStatus: say });
  const feed = alertFeed(root.querySelector("#alerts"), { stream: streamId });
  connect();
  window.addEventListener("pagehide", () => close());

  function close() {
    closed = true;
    clearTimeout(retryTimer);
    overlay.close();
    feed.close();
    pc?.close();
  }
  return { close };
}
