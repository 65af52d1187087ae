// Faces drawn over a live video, in step with the frame on screen.
//
// The server stamps each video frame with its capture time on the 90 kHz RTP clock; aiortc adds
// a random origin and sends it as the RTP timestamp, which Chrome gives us for every displayed
// frame (requestVideoFrameCallback → metadata.rtpTimestamp). The metadata WebSocket sends the
// same number, without the origin, as `rtp_ticks` for every processed frame. FrameClock learns
// the origin by voting (each pair of a displayed frame and a recent metadata message proposes
// rtpTimestamp - rtp_ticks; the true origin comes up again for nearly every frame, a wrong one
// only by chance), then gives each displayed frame the metadata with exactly its timestamp, or
// else the nearest earlier one at most 0.5 s before it, or nothing. Without rtpTimestamp (other
// browsers) the newest metadata received in the last 0.5 s is drawn instead ("latest").
// See facewatch/web/live_view.py for the server's side.

import { el, wsUrl } from "./api.js";

const WRAP = 2 ** 32;
const CLOCK_HZ = 90000;
/** Boxes of a frame older than this (relative to the frame shown) are never drawn. */
const MAX_AGE_S = 0.5;
const MAX_AGE_TICKS = MAX_AGE_S * CLOCK_HZ;
/** Votes the leading origin needs, and by how much it must lead the runner-up. */
const VOTES_TO_LOCK = 3;
/** Ticks two timestamps may differ by and still name the same frame (encoders round). */
const TOLERANCE = 1;
/** Displayed frames in a row without their metadata before the origin is learnt again. */
const MISSES_TO_RELEARN = 45;

const mod = (value) => ((value % WRAP) + WRAP) % WRAP;

/** Matches displayed video frames (RTP timestamps) with metadata messages (rtp_ticks). */
export class FrameClock {
  constructor({ keepMessages = 120, keepFrames = 30 } = {}) {
    this.keepMessages = keepMessages;
    this.keepFrames = keepFrames;
    this.reset();
  }

  reset() {
    this.messages = []; // recent metadata, oldest first
    this.frames = []; // recent displayed RTP timestamps while learning
    this.votes = new Map();
    this.origin = null;
    this.misses = 0;
  }

  get locked() {
    return this.origin !== null;
  }

  /** A metadata message arrived. */
  addMessage(message) {
    this.messages.push(message);
    if (this.messages.length > this.keepMessages) this.messages.shift();
    if (!this.locked) {
      for (const rtp of this.frames) this.vote(mod(rtp - message.rtp_ticks));
      this.tryLock();
    }
  }

  /** A frame was displayed; returns {message, exact} for it, or null when none may be drawn. */
  frameShown(rtpTimestamp) {
    if (!this.locked) {
      for (const message of this.messages) this.vote(mod(rtpTimestamp - message.rtp_ticks));
      this.frames.push(rtpTimestamp);
      if (this.frames.length > this.keepFrames) this.frames.shift();
      this.tryLock();
      if (!this.locked) return null;
    }
    const ticks = mod(rtpTimestamp - this.origin);
    const found = this.messageAt(ticks);
    if (found && found.exact) this.misses = 0;
    else if (++this.misses >= MISSES_TO_RELEARN) this.reset(); // the sender started over
    return found;
  }

  /** The frame time (rtp_ticks) of a displayed RTP timestamp; null until the origin is known. */
  ticksOf(rtpTimestamp) {
    return this.locked ? mod(rtpTimestamp - this.origin) : null;
  }

  /** The message for a frame time: exactly it, or the nearest earlier within MAX_AGE_S. */
  messageAt(ticks) {
    let best = null;
    let bestAge = Infinity;
    for (const message of this.messages) {
      const age = mod(ticks - message.rtp_ticks + TOLERANCE) - TOLERANCE;
      if (Math.abs(age) <= TOLERANCE) return { message, exact: true };
      if (age <= MAX_AGE_TICKS && age < bestAge) {
        best = message;
        bestAge = age;
      }
    }
    return best ? { message: best, exact: false } : null;
  }

  vote(candidate) {
    this.votes.set(candidate, (this.votes.get(candidate) || 0) + 1);
  }

  support(candidate) {
    let count = 0;
    for (let d = -TOLERANCE; d <= TOLERANCE; d++) count += this.votes.get(mod(candidate + d)) || 0;
    return count;
  }

  tryLock() {
    let best = null;
    let first = 0;
    for (const candidate of this.votes.keys()) {
      const count = this.support(candidate);
      if (count > first) {
        first = count;
        best = candidate;
      }
    }
    let second = 0; // the best rival: a candidate that is not the leader's neighbour
    for (const candidate of this.votes.keys()) {
      const near = mod(candidate - best + 2 * TOLERANCE) <= 4 * TOLERANCE;
      if (!near) second = Math.max(second, this.support(candidate));
    }
    if (first >= VOTES_TO_LOCK && first >= 2 * second) {
      this.origin = best;
      this.votes.clear();
      this.frames = [];
    } else if (this.votes.size > 20000) {
      this.votes.clear(); // only noise so far: start counting afresh
    }
  }
}

/** Draw faces (frame pixels) on a canvas showing a frame of width x height. */
export function drawFaces(canvas, faces, width, height) {
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!faces.length) return;
  const sx = canvas.width / width;
  const sy = canvas.height / height;
  const line = Math.max(2, Math.round(canvas.width / 320));
  context.lineWidth = line;
  context.font = `${Math.max(12, Math.round(canvas.width / 45))}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.bbox;
    const known = face.person !== null && face.person !== undefined;
    const colour = known ? "#22c55e" : "#f59e0b";
    context.strokeStyle = colour;
    context.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const label = known
      ? `${face.person} ${face.similarity === null ? "" : face.similarity.toFixed(2)}`.trim()
      : `#${face.track}`;
    const textWidth = context.measureText(label).width + 2 * line;
    const textHeight = parseInt(context.font, 10) + line;
    const top = Math.max(textHeight, y1 * sy);
    context.fillStyle = colour;
    context.fillRect(x1 * sx - line / 2, top - textHeight, textWidth, textHeight);
    context.fillStyle = "#000";
    context.fillText(label, x1 * sx + line, top - line / 2);
  }
}

/**
 * Keep a canvas over a video showing the faces of the frame on screen.
 *
 * The canvas carries what it shows for tests and tools: data-synced ("exact", "near",
 * "latest", "none" or "learning"), data-faces (count), data-names (JSON list of names).
 * Returns {close()}.
 */
export function attachOverlay({ video, canvas, list, streamId, onStatus = () => {} }) {
  const clock = new FrameClock();
  const useRtp = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
  let socket = null;
  let closed = false;
  let retry = 0;
  let retryTimer = null;
  let shownTicks = null; // the frame on screen (rtp_ticks), once the clock is locked
  let shownExact = false;
  let latest = null; // fallback mode: {message, at}
  let frameCallback = null;
  let animation = null;

  function render(message, synced) {
    if (video.videoWidth && (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight)) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
    }
    const faces = message ? message.faces : [];
    if (message) drawFaces(canvas, faces, message.width, message.height);
    else canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    const names = faces.filter((f) => f.person).map((f) => f.person);
    canvas.dataset.synced = synced;
    canvas.dataset.faces = String(faces.length);
    canvas.dataset.names = JSON.stringify(names);
    if (list) {
      list.replaceChildren(
        ...faces.map((face) =>
          el(
            "li",
            { dataset: { track: face.track, person: face.person || "" } },
            face.person ? face.person : `unknown #${face.track}`,
            face.similarity === null ? "" : ` (${face.similarity.toFixed(2)})`,
          ),
        ),
      );
    }
  }

  function onFrame(now, metadata) {
    if (closed) return;
    frameCallback = video.requestVideoFrameCallback(onFrame);
    if (metadata.rtpTimestamp === undefined) {
      fallbackDraw();
      return;
    }
    const found = clock.frameShown(metadata.rtpTimestamp);
    shownTicks = clock.ticksOf(metadata.rtpTimestamp);
    shownExact = Boolean(found && found.exact);
    if (!clock.locked) render(null, "learning");
    else if (found) render(found.message, found.exact ? "exact" : "near");
    else render(null, "none");
  }

  function fallbackDraw() {
    const fresh = latest && performance.now() - latest.at <= MAX_AGE_S * 1000;
    render(fresh ? latest.message : null, fresh ? "latest" : "none");
  }

  function animate() {
    if (closed) return;
    fallbackDraw();
    animation = requestAnimationFrame(animate);
  }

  function onMessage(event) {
    const message = JSON.parse(event.data);
    if (message.type === "frame") {
      latest = { message, at: performance.now() };
      clock.addMessage(message);
      // Metadata can arrive after its frame was put on screen: draw it then.
      if (clock.locked && !shownExact && shownTicks === message.rtp_ticks) {
        shownExact = true;
        render(message, "exact");
      }
    } else if (message.type === "end") {
      onStatus("the stream was removed");
    } else if (message.type === "error") {
      onStatus(message.error.message);
      closed = true;
    }
  }

  function connect() {
    if (closed) return;
    socket = new WebSocket(wsUrl(`/ws/live/${encodeURIComponent(streamId)}`));
    socket.addEventListener("open", () => {
      retry = 0;
    });
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", (event) => {
      if (closed || event.code === 1000 || event.code === 4404) return;
      // A new socket may meet a new sender: the origin is learnt again.
      clock.reset();
      retryTimer = setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
    });
  }

  connect();
  if (useRtp) frameCallback = video.requestVideoFrameCallback(onFrame);
  else animation = requestAnimationFrame(animate);

  return {
    clock,
    close() {
      closed = true;
      clearTimeout(retryTimer);
      if (frameCallback !== null && useRtp) video.cancelVideoFrameCallback(frameCallback);
      if (animation !== null) cancelAnimationFrame(animation);
      socket?.close(1000);
    },
  };
}
