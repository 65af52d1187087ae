"""One stream's settings: validated at the edge (config files, the REST API), frozen after."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from facewatch.stream.urls import SourceKind, source_kind


def _split_numbers(value: Any, count: int) -> Any:
    """``"640,480"`` / ``"640x480"`` -> ``["640", "480"]``; anything else as it is."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace("x", ",").split(",")]
        if len(parts) != count:
            raise ValueError(f"expected {count} comma-separated numbers, got {value!r}")
        return parts
    return value


class StreamConfig(BaseModel):
    """How to read one video stream.

    Files pace themselves only when asked (``realtime``); network and WebRTC sources never
    end and reconnect with backoff when they fail.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="rtsp://, rtsps://, http(s)://, a file path or file:// URL, or 'webrtc' "
        "(frames pushed by a WebRTC peer)."
    )
    name: str | None = Field(None, description="A human name; the default id is its slug.")
    enabled: bool = Field(True, description="False: added but not started (state 'paused').")
    fps_cap: float | None = Field(
        None,
        gt=0,
        description="At most this many frames per second (of the source's timeline) handed "
        "over; the others are dropped evenly and counted as 'fps_cap'.",
    )
    detection_size: tuple[int, int] | None = Field(
        None, description="Detector input width,height for this stream (multiples of 32)."
    )
    roi: tuple[float, float, float, float] | None = Field(
        None,
        description="Region of interest x1,y1,x2,y2 as fractions of the image in [0, 1].",
    )
    loop: bool = Field(False, description="Files: start over at the end (never ends).")
    realtime: bool | None = Field(
        None,
        description="Files: hand frames over at the file's frame rate. Default: when looping.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP lower transport.")
    open_timeout_s: float = Field(10.0, gt=0, description="Longest wait to open a source, s.")
    read_timeout_s: float = Field(
        5.0,
        gt=0,
        description="No video packet for this long on a live source (nothing came, or only "
        "other data): reconnect, s.",
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0, description="First delay before reconnecting, s (then doubled, jittered)."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest delay between reconnects, s.")

    @property
    def kind(self) -> SourceKind:
        """What kind of source :attr:`url` names."""
        return source_kind(self.url)

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def paced(self) -> bool:
        """Frames of a file are handed over at the file's frame rate."""
        if not self.is_file:
            return False
        return self.loop if self.realtime is None else self.realtime

    @property
    def lossless(self) -> bool:
        """Every frame is handed over: the decoder waits for the consumer (unpaced files)."""
        return self.is_file and not self.paced

    @property
    def live(self) -> bool:
        """Frames come at the source's pace (cameras, WebRTC, paced files) and are dropped,
        oldest first, when the consumer is behind; the opposite of :attr:`lossless`."""
        return not self.lossless

    @property
    def endless(self) -> bool:
        """Network and WebRTC streams and looping files never reach the state 'ended'."""
        return not self.is_file or self.loop

    @field_validator("url")
    @classmethod
    def _known_url(cls, value: str) -> str:
        value = value.strip()
        source_kind(value)  # raises ValueError naming the problem
        return value

    @field_validator("name")
    @classmethod
    def _non_blank_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name must not be blank")
        return value.strip() if value is not None else None

    @field_validator("detection_size", mode="before")
    @classmethod
    def _split_size(cls, value: Any) -> Any:
        return _split_numbers(value, 2)

    @field_validator("detection_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and any(v < 32 or v > 4096 or v % 32 for v in value):
            raise ValueError("both sides must be multiples of 32 between 32 and 4096")
        return value

    @field_validator("roi", mode="before")
    @classmethod
    def _split_roi(cls, value: Any) -> Any:
        return _split_numbers(value, 4)

    @field_validator("roi")
    @classmethod
    def _ordered_fractions(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is None:
            return None
        x1, y1, x2, y2 = value
        if not all(0.0 <= v <= 1.0 for v in value):
            raise ValueError("x1,y1,x2,y2 must be fractions of the image in [0, 1]")
        if not (x1 < x2 and y1 < y2):
            raise ValueError("need x1 < x2 and y1 < y2")
        return value

    @field_validator("reconnect_max_s")
    @classmethod
    def _max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("reconnect_initial_s")
        if initial is not None and value < initial:
            raise ValueError(f"must be at least reconnect_initial_s ({initial})")
        return value
