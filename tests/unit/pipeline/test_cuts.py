"""Scene cuts: tables of thumbnail differences, and the thumbnail of a real-looking frame."""

from __future__ import annotations

import numpy as np
import pytest

from facewatch.pipeline.cuts import (
    COLOUR_BINS,
    THUMBNAIL_SIDE,
    CutConfig,
    SceneCuts,
    Thumbnail,
    colour_distance,
    thumbnail,
)

#: One colour histogram for frames whose colours do not change.
SAME_COLOURS = np.full((COLOUR_BINS, COLOUR_BINS), 1 / COLOUR_BINS**2, np.float32)


def frames_with_differences(differences: list[float], seed: int = 0) -> list[Thumbnail]:
    """Thumbnails whose consecutive mean absolute grey differences are exactly ``differences``
    and whose colours never change."""
    rng = np.random.default_rng(seed)
    current = rng.uniform(0.3, 0.7, (THUMBNAIL_SIDE, THUMBNAIL_SIDE)).astype(np.float32)
    out = [Thumbnail(current, SAME_COLOURS)]
    for i, difference in enumerate(differences):
        sign = 1.0 if i % 2 == 0 else -1.0  # stay inside [0, 1]
        current = (current + sign * difference).astype(np.float32)
        out.append(Thumbnail(current, SAME_COLOURS))
    return out


def colour_histogram(weights: list[float]) -> np.ndarray:
    """A histogram whose first bins hold ``weights`` (normalised)."""
    histogram = np.zeros(COLOUR_BINS * COLOUR_BINS, np.float32)
    histogram[: len(weights)] = weights
    return (histogram / histogram.sum()).reshape(COLOUR_BINS, COLOUR_BINS)


# (consecutive differences, frames (1-based, after the first) reported as cuts)
CASES = {
    "still camera": ([0.01] * 20, []),
    "one hard cut": ([0.01] * 10 + [0.11] + [0.01] * 5, [11]),
    "a difference under min_difference is no cut, however quiet the stream": (
        [0.0] * 10 + [0.06],
        [],
    ),
    "a fast pan is no stream of cuts": ([0.08] * 20, []),
    "a cut in a pan must stand out from it": ([0.05] * 10 + [0.12] + [0.05] * 3 + [0.2], [15]),
    "flashing cuts until it is the stream's normal": ([0.0] * 3 + [0.5] * 6, [4, 5, 6]),
    "the first difference has nothing to stand out from": ([0.3, 0.01], []),
}


@pytest.mark.parametrize(("differences", "cuts"), CASES.values(), ids=CASES)
def test_cuts(differences: list[float], cuts: list[int]) -> None:
    detector = SceneCuts()
    found = [
        i for i, thumb in enumerate(frames_with_differences(differences)) if detector.is_cut(thumb)
    ]
    assert found == cuts
    assert detector.cuts == len(cuts) and type(detector.cuts) is int  # it goes into JSON


def test_a_cut_between_shots_of_one_brightness_shows_in_their_colours() -> None:
    grey = np.full((THUMBNAIL_SIDE, THUMBNAIL_SIDE), 0.5, np.float32)
    warm, cool = colour_histogram([1, 1, 0, 0]), colour_histogram([0, 0, 1, 1])
    frames = [Thumbnail(grey, warm)] * 5 + [Thumbnail(grey, cool)] * 3
    detector = SceneCuts()
    assert [detector.is_cut(f) for f in frames] == [False] * 5 + [True, False, False]
    only_grey = SceneCuts(CutConfig(min_colour_distance=0.0))
    assert not any(only_grey.is_cut(f) for f in frames)


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [([1, 1], [1, 1], 0.0), ([1, 0], [0, 1], 1.0), ([1, 1], [1, 0], 0.541)],
)
def test_colour_distance(a: list[float], b: list[float], distance: float) -> None:
    assert colour_distance(colour_histogram(a), colour_histogram(b)) == pytest.approx(
        distance, abs=1e-3
    )


def test_disabled_and_reset() -> None:
    frames = frames_with_differences([0.0, 0.5])
    off = SceneCuts(CutConfig(min_difference=0.0))
    assert [off.is_cut(f) for f in frames] == [False, False, False]
    on = SceneCuts()
    on.is_cut(frames[0])
    on.is_cut(frames[1])
    on.reset()  # the stream started over: its next frame is compared with nothing
    assert on.is_cut(frames[2]) is False


@pytest.mark.parametrize("config", [{"min_difference": 1.5}, {"min_ratio": 0.5}, {"history": 0}])
def test_config_is_checked(config: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CutConfig(**config)  # type: ignore[arg-type]


def test_thumbnail_of_a_frame() -> None:
    image = np.zeros((360, 640, 3), np.uint8)
    image[:, 320:] = 255
    thumb = thumbnail(image)
    grey = thumb.grey
    assert grey.shape == (THUMBNAIL_SIDE, THUMBNAIL_SIDE) and grey.dtype == np.float32
    assert grey[:, : THUMBNAIL_SIDE // 2].max() == 0.0
    assert grey[:, THUMBNAIL_SIDE // 2 :].min() == 1.0
    # Black and white have no hue or saturation: everything in the first bin.
    assert thumb.colour.shape == (COLOUR_BINS, COLOUR_BINS)
    assert thumb.colour.sum() == pytest.approx(1.0) and thumb.colour[0, 0] == pytest.approx(1.0)
