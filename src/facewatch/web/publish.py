"""Publishing a browser's webcam: its WebRTC video becomes a new live stream of the pipeline.

:meth:`WebcamPublisher.publish` hands the browser's offer to a
:class:`~facewatch.stream.webrtc.WebRTCIngest` that adds and removes its streams through the
pipeline (so that removing one also ends its tracks and their alerts), under the name asked
for, and turns the ingest's errors into HTTP errors.

A published stream lives as long as its peer: when the connection fails or closes, or the
track ends, the stream is removed. When the stream is removed first (``DELETE
/api/streams/{id}``), the peer is closed. At shutdown :meth:`WebcamPublisher.close_all` closes
every peer and removes its stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiortc import RTCPeerConnection, RTCSessionDescription
from pydantic import ValidationError

from facewatch.errors import FacewatchError, OfferError
from facewatch.stream.config import StreamConfig
from facewatch.stream.urls import WEBRTC_URL
from facewatch.stream.webrtc import WebRTCIngest, WebRTCSession, default_peer_connection
from facewatch.web.errors import ApiError

if TYPE_CHECKING:
    from facewatch.pipeline.runner import Pipeline
    from facewatch.web.services import Services

log = logging.getLogger(__name__)

#: Where :meth:`WebcamPublisher.of` keeps the publisher in ``Services.extras``.
EXTRAS_KEY = "webcam_publisher"


class WebcamPublisher:
    """Turns browsers' webcams into streams of ``pipeline``.

    Args:
        pipeline: where the streams are added.
        pc_factory: makes each peer connection; default: no ICE servers (host candidates).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        pc_factory: Callable[[], RTCPeerConnection] = default_peer_connection,
    ) -> None:
        self._ingest = WebRTCIngest(
            pipeline.streams,
            add_stream=pipeline.add_stream,
            remove_stream=pipeline.remove_stream,
            pc_factory=pc_factory,
        )

    @classmethod
    def of(cls, services: Services) -> WebcamPublisher:
        """The server's publisher, made on first use and kept in ``services.extras``."""
        publisher = services.extras.get(EXTRAS_KEY)
        if publisher is None:
            publisher = services.extras[EXTRAS_KEY] = cls(services.pipeline)
        assert isinstance(publisher, WebcamPublisher)
        return publisher

    @property
    def published(self) -> list[str]:
        """Ids of the streams fed by a browser now."""
        return self._ingest.stream_ids

    async def publish(self, offer: RTCSessionDescription, name: str) -> WebRTCSession:
        """Add a live stream named ``name`` fed by the video of ``offer``.

        Raises:
            ApiError: 409 a stream with that id exists, 422 a bad name or an offer that cannot
                be answered, 503 shutting down, 504 negotiation took too long.
        """
        if self._ingest.closed:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        try:
            config = StreamConfig(url=WEBRTC_URL, name=name)
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
            raise ApiError(422, "invalid_name", f"stream name: {problem}") from None
        try:
            session = await self._ingest.accept_offer(offer, config=config)
        except OfferError as exc:
            raise ApiError(422, "bad_offer", str(exc)) from None
        except ValueError as exc:
            raise ApiError(409, "stream_exists", str(exc), name=name) from None
        except TimeoutError:
            raise ApiError(504, "negotiation_timeout", "WebRTC negotiation took too long") from None
        except (FacewatchError, RuntimeError) as exc:  # the pipeline or the ingest is closing
            raise ApiError(503, "shutting_down", str(exc)) from None
        log.info("stream %s: published from a browser", session.stream.id)
        return session

    async def close_all(self) -> None:
        """Close every publishing peer and remove its stream; idempotent."""
        await self._ingest.close()
