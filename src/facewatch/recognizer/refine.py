"""Where to look again for a face's landmarks at the image's own resolution (pure geometry).

YuNet's landmarks are not a smooth function of the image: they move with the sampling grid.
On 150 LFW photos (250x250) the same face detected again after the photo was only shifted by
8 px inside the input moves its landmarks by a median 7.5 % of the eye distance, after a
resize by 1.024 by 5.8 %, after the 2.56x letterbox to 640x640 by 8.8 %; shifted by 32 px (a
whole cell of the coarsest stride) by 1.8 %. The letterbox mapping itself is exact (uniform
scale, no offset, no rounding once mapped back). So alignment is as exact as OpenCV's own
pipeline (detection at the image's own size) only when the landmarks come from the face's own
pixels on the same grid: a window around the face, cut at a multiple of the coarsest stride
and not resized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from facewatch.recognizer.boxes import iou_matrix

F32 = NDArray[np.float32]

#: Context around a face in a refinement window, in face-box sides on every side.
REFINE_MARGIN = 1.0
#: Largest refinement input side in pixels; bigger windows are scaled down to it.
REFINE_MAX_SIDE = 1280
#: Smallest overlap (IoU) with the first detection for a refined face to stand for it.
REFINE_MIN_IOU = 0.5


@dataclass(frozen=True, slots=True)
class Window:
    """A region of an image to detect in again.

    Attributes:
        x0, y0: top-left corner in image pixels (multiples of ``stride`` where not scaled).
        x1, y1: bottom-right corner (exclusive), inside the image.
        scale: detector-input pixels per image pixel (1.0 unless the window was too big).
        input_size: detector input (width, height), multiples of ``stride``.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    input_size: tuple[int, int]


def refine_window(
    xyxy: F32,
    image_wh: tuple[int, int],
    *,
    stride: int = 32,
    margin: float = REFINE_MARGIN,
    max_side: int = REFINE_MAX_SIDE,
) -> Window:
    """The window around one face box (x1, y1, x2, y2 in pixels) to detect it again in.

    The window's top-left corner is moved down to a multiple of ``stride`` so the detector's
    cells fall where they fall on the whole image, and the detector input is the window padded
    to a multiple of ``stride``: the face keeps its own pixels.
    """
    width, height = image_wh
    side = float(max(xyxy[2] - xyxy[0], xyxy[3] - xyxy[1], 1.0))
    x0 = max(0, int(math.floor((xyxy[0] - margin * side) / stride)) * stride)
    y0 = max(0, int(math.floor((xyxy[1] - margin * side) / stride)) * stride)
    x1 = int(min(width, math.ceil(xyxy[2] + margin * side)))
    y1 = int(min(height, math.ceil(xyxy[3] + margin * side)))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    scale = min(1.0, max_side / max(x1 - x0, y1 - y0))
    input_w = max(stride, math.ceil((x1 - x0) * scale / stride) * stride)
    input_h = max(stride, math.ceil((y1 - y0) * scale / stride) * stride)
    return Window(x0, y0, x1, y1, scale, (input_w, input_h))


def same_face(candidates: F32, target: F32, min_iou: float = REFINE_MIN_IOU) -> int | None:
    """Row of (M, 4) ``candidates`` overlapping the (4,) ``target`` box most, if enough."""
    if len(candidates) == 0:
        return None
    overlap = iou_matrix(target[None], candidates)[0]
    best = int(np.argmax(overlap))
    return best if overlap[best] >= min_iou else None
