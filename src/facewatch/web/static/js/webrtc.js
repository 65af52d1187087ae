// WebRTC with the server: receive a stream's live video, or send this browser's webcam.
// The server (aiortc) takes no trickled candidates, so each offer waits for ICE gathering and
// carries its candidates. No STUN or TURN server: the server is reached directly.

import { api } from "./api.js";

const GATHER_TIMEOUT_MS = 5000;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, GATHER_TIMEOUT_MS); // send what we have by then
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function offerOf(pc) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  return { sdp: pc.localDescription.sdp, type: "offer" };
}

/** Show a stream's live video in `video`; returns the RTCPeerConnection. */
export async function receiveStream(streamId, video, onState = () => {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addEventListener("track", (event) => {
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
  });
  pc.addEventListener("connectionstatechange", () => onState(pc.connectionState));
  try {
    const offer = await offerOf(pc);
    const answer = await api(`/api/streams/${encodeURIComponent(streamId)}/webrtc`, {
      method: "POST",
      json: offer,
    });
    await pc.setRemoteDescription(answer);
  } catch (error) {
    pc.close();
    throw error;
  }
  return pc;
}

/** Send a camera's video as a new stream named `name`; returns {pc, stream: {id, name}}. */
export async function publishCamera(mediaStream, name, onState = () => {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of mediaStream.getVideoTracks()) {
    pc.addTransceiver(track, { direction: "sendonly", streams: [mediaStream] });
  }
  pc.addEventListener("connectionstatechange", () => onState(pc.connectionState));
  try {
    const offer = await offerOf(pc);
    const answer = await api("/api/publish", { method: "POST", json: { ...offer, name } });
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    return { pc, stream: answer.stream };
  } catch (error) {
    pc.close();
    throw error;
  }
}
