"""Routes: the live view (WebRTC video out, overlay metadata) and webcam publishing.

* ``POST /api/streams/{id}/webrtc`` (viewer): ``{"sdp", "type": "offer"}`` → the answer of a peer
  that sends the stream's processed frames (see :mod:`facewatch.web.live_view`).
* ``WS /ws/live/{id}`` (viewer): the faces of each processed frame, for the overlay.
* ``POST /api/publish`` (operator): ``{"sdp", "type": "offer", "name"}`` → 201 with the answer
  and the new stream, fed by the browser's webcam until it disconnects
  (see :mod:`facewatch.web.publish`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiortc import RTCSessionDescription
from fastapi import APIRouter, Depends, WebSocket
from pydantic import BaseModel, ConfigDict, Field

from facewatch.web.auth import Principal, Role, authenticate_websocket, require
from facewatch.web.body_limit import limited_body_route
from facewatch.web.errors import error_responses
from facewatch.web.live_view import LiveViews
from facewatch.web.publish import WebcamPublisher
from facewatch.web.services import Services, get_services

#: Longest SDP accepted; a browser's offer with audio and video is a few kilobytes.
MAX_SDP_CHARS = 64 * 1024
#: An offer is its SDP and a few keys; JSON escaping can double an SDP's line ends.
BODY_LIMIT = 4 * MAX_SDP_CHARS

router = APIRouter(tags=["live"], route_class=limited_body_route(BODY_LIMIT))
ServicesDep = Annotated[Services, Depends(get_services)]
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]


class Offer(BaseModel):
    """A WebRTC session description of type offer, as ``RTCPeerConnection.localDescription``."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS, description="The SDP offer.")
    type: Literal["offer"] = Field(description="Always 'offer'.")


class PublishOffer(Offer):
    """An offer that sends a webcam, and the name of the stream it becomes."""

    name: str = Field(min_length=1, max_length=100, description="The new stream's name.")


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"]


class PublishedStream(BaseModel):
    id: str
    name: str


class PublishAnswer(Answer):
    stream: PublishedStream


@router.post(
    "/api/streams/{stream_id}/webrtc",
    response_model=Answer,
    responses=error_responses(429, 504),
)
async def watch_stream(
    stream_id: str,
    offer: Offer,
    principal: Viewer,
    services: ServicesDep,
) -> dict[str, Any]:
    """Answer a viewer's offer with a peer that sends the stream's video (at most 8 a stream)."""
    answer = await LiveViews.of(services).open(
        stream_id, RTCSessionDescription(sdp=offer.sdp, type=offer.type)
    )
    return {"sdp": answer.sdp, "type": answer.type}


@router.websocket("/ws/live/{stream_id}")
async def live_metadata(websocket: WebSocket, stream_id: str, services: ServicesDep) -> None:
    """The faces of each processed frame of a stream, for drawing over its live video."""
    refused = await authenticate_websocket(websocket, Role.viewer) is None
    # Accepted either way: a browser sees the close code (1008), never a handshake's status.
    await websocket.accept()
    if refused:
        await websocket.close(1008, "a viewer's credentials are needed")
        return
    await LiveViews.of(services).stream_metadata(websocket, stream_id)


@router.post(
    "/api/publish",
    response_model=PublishAnswer,
    status_code=201,
    responses=error_responses(409, 504),
)
async def publish_webcam(
    offer: PublishOffer,
    principal: Operator,
    services: ServicesDep,
) -> dict[str, Any]:
    """Answer an offer that sends a webcam; its video becomes a new live stream."""
    publication = await WebcamPublisher.of(services).publish(
        RTCSessionDescription(sdp=offer.sdp, type=offer.type), offer.name
    )
    stream = publication.stream
    return {
        "sdp": publication.answer.sdp,
        "type": publication.answer.type,
        "stream": {"id": stream.id, "name": stream.name},
    }
