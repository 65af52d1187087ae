// The publish page: this browser's webcam becomes a stream, shown live with its faces.

import { showError } from "./api.js";
import { showLive } from "./live_panel.js";
import { setUpNav } from "./nav.js";
import { publishCamera } from "./webrtc.js";

setUpNav();
const form = document.getElementById("publish-form");
const start = document.getElementById("publish-start");
const stop = document.getElementById("publish-stop");
const error = form.querySelector(".error");
const live = document.getElementById("publish-live");
const link = document.getElementById("live-link");
const nameInput = form.querySelector('input[name="name"]');
let session = null; // {camera, pc, stream, view}

function end() {
  if (!session) return;
  session.view?.close();
  session.pc.close(); // the server removes the stream when its peer goes
  for (const track of session.camera.getTracks()) track.stop();
  session = null;
  live.hidden = true;
  start.hidden = false;
  stop.hidden = true;
  nameInput.disabled = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(error, null);
  start.disabled = true;
  let camera = null;
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    const { pc, stream } = await publishCamera(camera, nameInput.value.trim(), (state) => {
      if (state === "failed") {
        showError(error, "The connection to the server was lost.");
        end();
      }
    });
    session = { camera, pc, stream, view: null };
    nameInput.disabled = true;
    start.hidden = true;
    stop.hidden = false;
    live.hidden = false;
    live.dataset.stream = stream.id;
    link.href = `/live/${encodeURIComponent(stream.id)}`;
    session.view = showLive(live, stream.id);
  } catch (failure) {
    if (camera) for (const track of camera.getTracks()) track.stop();
    showError(error, failure);
  } finally {
    start.disabled = false;
  }
});

stop.addEventListener("click", end);
window.addEventListener("pagehide", end);
