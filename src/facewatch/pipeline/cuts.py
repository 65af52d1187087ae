"""Scene cuts: the frame where a video switches to another shot, so no track survives it.

A face tracked by its box cannot tell that the face under the box belongs to someone else after
an edit (a close-up cut to the audience, a camera switcher, a slideshow of photos): the new face
often overlaps the old box, and the track would carry one person's name onto another. A cut is
cheap to see, though: the whole picture changes at once, whereas motion changes it a little
from frame to frame. :class:`SceneCuts` compares small thumbnails of consecutive frames of one
stream in two ways: the mean absolute difference of their grey pixels, and the Bhattacharyya
distance of their hue-saturation histograms (two shots of the same brightness rarely share their
colours; people changing places in one shot do). Either one makes a cut when it is both large in
itself and several times the stream's recent typical value (so a fast pan or a shaky camera,
whose differences are all high, does not read as a stream of cuts).

Measured on 32x32 thumbnails: the three cuts of ``fr_short_hamilton_clip.mp4`` differ by
0.104-0.117 in grey and 0.37-0.51 in colour, every other pair of its frames by at most 0.05 and
0.116; in the other shared clips (crowd, head pose, smoke) no pair of frames exceeds 0.025 and
0.065. In the cut clips of ``benchmarks/labelled_video.py`` a cut between two photos of the same
brightness differed by only 0.052-0.066 in grey but by 0.34-0.53 in colour.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

#: Thumbnail side in pixels: enough to see a shot change, small enough to cost ~0.1 ms a frame.
THUMBNAIL_SIDE = 32
#: Hue and saturation bins of the colour histogram.
COLOUR_BINS = 8


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """What a frame looks like from afar.

    Attributes:
        grey: (THUMBNAIL_SIDE, THUMBNAIL_SIDE) grey pixels in [0, 1].
        colour: (COLOUR_BINS, COLOUR_BINS) hue-saturation histogram summing to 1.
    """

    grey: F32
    colour: F32


def thumbnail(image: NDArray[np.uint8]) -> Thumbnail:
    """The :class:`Thumbnail` of a BGR frame."""
    side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    small = cv2.resize(image, side, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    bins = [COLOUR_BINS, COLOUR_BINS]
    histogram = cv2.calcHist([hsv], [0, 1], None, bins, [0, 180, 0, 256]).astype(np.float32)
    return Thumbnail(grey, histogram / max(float(histogram.sum()), 1.0))


def colour_distance(a: F32, b: F32) -> float:
    """Bhattacharyya distance of two histograms summing to 1: 0 the same, 1 nothing shared."""
    overlap = float(np.sqrt(a * b).sum())
    return float(np.sqrt(max(0.0, 1.0 - overlap)))


@dataclass(frozen=True, slots=True)
class CutConfig:
    """When a change between two frames is a cut.

    Attributes:
        min_difference: mean absolute difference of the grey thumbnails (0..1) that makes a
            cut; 0 disables cut detection altogether.
        min_colour_distance: Bhattacharyya distance of the colour histograms (0..1) that makes
            a cut; 0 disables this test alone.
        min_ratio: ...each also at least this many times its recent median.
        history: how many recent frames make that median.
    """

    min_difference: float = 0.07
    min_colour_distance: float = 0.25
    min_ratio: float = 3.0
    history: int = 15

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_difference <= 1.0 and 0.0 <= self.min_colour_distance <= 1.0):
            raise ValueError("min_difference and min_colour_distance must be in [0, 1]")
        if self.min_ratio < 1.0:
            raise ValueError("min_ratio must be at least 1")
        if self.history < 1:
            raise ValueError("history must be at least 1")


class SceneCuts:
    """Cut detection for one stream; pure, one call per processed frame, in order."""

    def __init__(self, config: CutConfig = CutConfig()) -> None:
        self.config = config
        self.cuts = 0
        self._previous: Thumbnail | None = None
        self._recent: deque[tuple[float, float]] = deque(maxlen=config.history)

    def reset(self) -> None:
        """Forget the previous frame (the stream restarted or reconnected)."""
        self._previous = None
        self._recent.clear()

    def is_cut(self, thumb: Thumbnail) -> bool:
        """Whether ``thumb`` (from :func:`thumbnail`) starts a new shot.

        The first two frames, and a frame of another thumbnail shape, are no cut: there is
        nothing to compare them with.
        """
        previous, self._previous = self._previous, thumb
        cfg = self.config
        if (
            previous is None
            or previous.grey.shape != thumb.grey.shape
            or previous.colour.shape != thumb.colour.shape
            or cfg.min_difference <= 0
        ):
            return False
        grey = float(np.abs(thumb.grey - previous.grey).mean())
        colour = colour_distance(thumb.colour, previous.colour)
        cut = False
        # With nothing seen yet there is no telling a cut from the stream's normal motion.
        if self._recent:
            typical_grey, typical_colour = (float(v) for v in np.median(self._recent, axis=0))
            cut = (grey >= cfg.min_difference and grey >= cfg.min_ratio * typical_grey) or (
                cfg.min_colour_distance > 0
                and colour >= cfg.min_colour_distance
                and colour >= cfg.min_ratio * typical_colour
            )
        # Cuts count towards the typical values too: a video that flashes at every frame makes
        # that its normal after a few frames, rather than a cut at every frame.
        self._recent.append((grey, colour))
        if cut:
            self.cuts += 1
        return cut
