"""Video streams: sources (RTSP, HTTP, files, WebRTC), reconnection, status, run-time control.

:class:`StreamManager` runs each stream's source on a thread of its own and hands decoded
frames to one sink on the event loop. WebRTC ingest lives in :mod:`facewatch.stream.webrtc`
(imported on demand: it pulls in aiortc).
"""

from facewatch.stream.config import StreamConfig
from facewatch.stream.manager import FrameSink, Stream, StreamManager
from facewatch.stream.status import StreamState, StreamStatus

__all__ = ["FrameSink", "Stream", "StreamConfig", "StreamManager", "StreamState", "StreamStatus"]
