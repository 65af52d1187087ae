"""The non-mated score distribution, the FPIR a threshold gives and the threshold for a target."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewatch.recognizer.calibrate import first_found, labels_of
from facewatch.recognizer.calibration import (
    FORMAT,
    GRID_POINTS,
    MIN_PERSONS,
    MIN_TAIL_COMPARISONS,
    Calibration,
    CalibrationError,
    CalibrationOrigin,
    ThresholdSource,
    calibration_from_dict,
    choose_threshold,
    exceed_counts,
    fpir,
    non_mated_person_scores,
)


def calibration_of(scores: list[float] | np.ndarray, **extra: Any) -> Calibration:
    """A calibration whose non-mated comparisons scored exactly ``scores``."""
    values = np.asarray(scores, np.float64)
    return Calibration(
        exceed_counts(values), comparisons=len(values), people=50, photos=100, **extra
    )


def tail(total: int, above: dict[float, int]) -> Calibration:
    """``total`` comparisons at 0.2, but ``above[s]`` of them at similarity ``s``."""
    scores = [s for s, n in above.items() for _ in range(n)]
    return calibration_of(scores + [0.2] * (total - len(scores)))


# --- the distribution --------------------------------------------------------------------------

# (scores, threshold, expected p)
RATE_CASES = {
    "every score at or above": ([0.5, 0.6, 0.7, 0.8], 0.5, 1.0),
    "inclusive at a grid point": ([0.5, 0.6, 0.7, 0.8], 0.6, 0.75),
    "between grid points reads the point below": ([0.5, 0.6004, 0.7, 0.8], 0.6005, 0.75),
    "above every score": ([0.5, 0.6, 0.7, 0.8], 0.9, 0.0),
    "negative scores count nowhere": ([-0.3, -0.1, 0.2, 0.4], 0.0, 0.5),
    "threshold below the grid reads its start": ([-0.3, 0.2], -0.5, 0.5),
    "a score of exactly 1": ([1.0, 0.0], 1.0, 0.5),
}


@pytest.mark.parametrize(("scores", "threshold", "expected"), RATE_CASES.values(), ids=RATE_CASES)
def test_false_match_rate(scores: list[float], threshold: float, expected: float) -> None:
    assert calibration_of(scores).false_match_rate(threshold) == pytest.approx(expected)


# (rate, persons, expected FPIR)
FPIR_CASES = {
    "no persons": (0.1, 0, 0.0),
    "one person is the rate": (0.1, 1, 0.1),
    "two persons": (0.1, 2, 0.19),
    "rare rate, many persons ~ N p": (1e-6, 1000, 1 - (1 - 1e-6) ** 1000),
    "tiny rate keeps its precision": (1e-12, 10, 1e-11),
    "zero rate": (0.0, 10**6, 0.0),
    "certain": (1.0, 3, 1.0),
}


@pytest.mark.parametrize(("rate", "persons", "expected"), FPIR_CASES.values(), ids=FPIR_CASES)
def test_fpir_grows_with_the_watchlist(rate: float, persons: int, expected: float) -> None:
    assert fpir(rate, persons) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_exceed_counts_are_cumulative_from_the_top() -> None:
    counts = exceed_counts(np.array([[0.0005, 0.001], [0.0015, 0.9999]]))
    assert len(counts) == GRID_POINTS
    assert counts[:3].tolist() == [4, 3, 1]  # >= 0.000, >= 0.001, >= 0.002
    assert counts[999] == 1 and counts[1000] == 0


# --- the threshold -----------------------------------------------------------------------------

# 100,000 comparisons: 1,000 at 0.3, 100 at 0.4, 20 at 0.5, 5 at 0.6, the rest at 0.2 (counts at
# or above: 0.2 -> all, 0.201 -> 1125, 0.301 -> 125, 0.401 -> 25, 0.501 -> 5, below the 10 a rate
# needs to be trusted, so 0.5 is the highest threshold the data supports).
LADDER = {0.3: 1000, 0.4: 100, 0.5: 20, 0.6: 5}

# (target FPIR, persons, threshold, clamped)
THRESHOLD_CASES = {
    "loose target, one person": (0.02, 1, 0.201, False),
    "p(0.301) = 125e-5 meets 0.2 % at 1": (0.002, 1, 0.301, False),
    "same target, 10 persons needs a higher one": (0.02, 10, 0.301, False),
    "10 persons, 0.3 %": (0.003, 10, 0.401, False),
    "100 persons, 2.5 %": (0.025, 100, 0.401, False),
    "rarer than the data resolves is clamped": (0.002, 100, 0.5, True),
    "a million persons, clamped at the last trusted point": (0.01, 10**6, 0.5, True),
}


@pytest.mark.parametrize(
    ("target", "persons", "threshold", "clamped"), THRESHOLD_CASES.values(), ids=THRESHOLD_CASES
)
def test_threshold_for_a_target(
    target: float, persons: int, threshold: float, clamped: bool
) -> None:
    calibration = tail(100_000, LADDER)
    choice = calibration.threshold_for(target, persons)
    assert choice.threshold == pytest.approx(threshold)
    assert choice.clamped is clamped
    assert choice.expected_fpir == pytest.approx(calibration.expected_fpir(threshold, persons))
    if clamped:
        assert choice.expected_fpir > target
    else:
        assert choice.expected_fpir <= target
        # The smallest such threshold: one grid step lower misses the target.
        assert calibration.expected_fpir(threshold - 0.001, persons) > target


def test_the_threshold_rises_with_the_watchlist() -> None:
    rng = np.random.default_rng(7)
    calibration = calibration_of(np.clip(rng.normal(0.05, 0.1, 400_000), -1, 1))
    choices = [calibration.threshold_for(0.01, n) for n in (1, 10, 100, 1000)]
    thresholds = [choice.threshold for choice in choices]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == 4
    # Normal tail: p = 1e-2 at mean + 2.326 sd, p = 1e-4 at mean + 3.719 sd.
    assert thresholds[0] == pytest.approx(0.05 + 2.326 * 0.1, abs=0.01)
    assert thresholds[2] == pytest.approx(0.05 + 3.719 * 0.1, abs=0.015)
    # p = 1e-5 would rest on ~4 of the 400,000 comparisons: out of reach, and said so.
    assert [choice.clamped for choice in choices] == [False, False, False, True]
    assert thresholds[3] == calibration.supported_max


def test_supported_range() -> None:
    calibration = tail(100_000, LADDER)
    assert calibration.supported_max == pytest.approx(0.5)
    assert calibration.smallest_rate == pytest.approx(25 / 100_000)
    assert MIN_TAIL_COMPARISONS == 10


@pytest.mark.parametrize(("target", "persons"), [(0.0, 10), (1.0, 10), (-0.1, 10), (0.01, 0)])
def test_threshold_for_refuses_meaningless_requests(target: float, persons: int) -> None:
    with pytest.raises(ValueError):
        tail(1000, LADDER).threshold_for(target, persons)


# --- which threshold is in effect ---------------------------------------------------------------

PACK = 0.363

# (fixed, has calibration, persons, source, value)
CHOICE_CASES = {
    "fixed wins over a calibration": (0.42, True, 100, ThresholdSource.FIXED, 0.42),
    "fixed without a calibration": (0.42, False, 100, ThresholdSource.FIXED, 0.42),
    "calibrated": (None, True, 10, ThresholdSource.CALIBRATED, 0.401),
    "calibrated for two persons": (None, True, 2, ThresholdSource.CALIBRATED, 0.301),
    "no calibration: the pack's": (None, False, 10, ThresholdSource.PACK, PACK),
    "one person: the pack's": (None, True, 1, ThresholdSource.PACK, PACK),
    "empty watchlist: the pack's": (None, True, 0, ThresholdSource.PACK, PACK),
}


@pytest.mark.parametrize(
    ("fixed", "calibrated", "persons", "source", "value"), CHOICE_CASES.values(), ids=CHOICE_CASES
)
def test_choose_threshold(
    fixed: float | None, calibrated: bool, persons: int, source: ThresholdSource, value: float
) -> None:
    calibration = tail(100_000, LADDER) if calibrated else None
    chosen = choose_threshold(
        fixed=fixed,
        pack_threshold=PACK,
        calibration=calibration,
        origin=CalibrationOrigin.SHIPPED if calibrated else None,
        target_fpir=0.003,
        persons=persons,
        templates=persons,
    )
    assert chosen.source is source
    assert chosen.value == pytest.approx(value)
    assert chosen.persons == persons and chosen.target_fpir == 0.003
    if calibration is None:
        assert chosen.expected_fpir is None and chosen.calibration is None
    else:
        assert chosen.calibration is CalibrationOrigin.SHIPPED
        assert chosen.expected_fpir == pytest.approx(calibration.expected_fpir(value, persons))
    if source is ThresholdSource.PACK:
        assert chosen.note  # says why
    record = chosen.as_dict()
    assert record["source"] == source.value and record["threshold"] == chosen.value


# (persons, templates, threshold): N counts templates, each one chance for a stranger.
TEMPLATE_CASES = {
    "one template each": (10, 10, 0.401),
    "ten persons with ten templates each count as 100": (10, 100, 0.5),
    "templates never count less than persons": (10, 0, 0.401),
}


@pytest.mark.parametrize(
    ("persons", "templates", "threshold"), TEMPLATE_CASES.values(), ids=TEMPLATE_CASES
)
def test_every_template_is_a_chance_for_a_stranger(
    persons: int, templates: int, threshold: float
) -> None:
    calibration = tail(100_000, LADDER)
    chosen = choose_threshold(
        fixed=None,
        pack_threshold=PACK,
        calibration=calibration,
        origin=CalibrationOrigin.SHIPPED,
        target_fpir=0.003,
        persons=persons,
        templates=templates,
    )
    assert chosen.value == pytest.approx(threshold)
    assert chosen.expected_fpir == pytest.approx(
        calibration.expected_fpir(threshold, max(persons, templates))
    )


def test_choose_threshold_says_when_the_target_is_out_of_reach() -> None:
    chosen = choose_threshold(
        fixed=None,
        pack_threshold=PACK,
        calibration=tail(100_000, LADDER),
        origin=CalibrationOrigin.LOCAL,
        target_fpir=0.0001,
        persons=1000,
        templates=1000,
    )
    assert chosen.source is ThresholdSource.CALIBRATED and chosen.clamped
    assert chosen.value == pytest.approx(0.5)
    assert chosen.expected_fpir is not None and chosen.expected_fpir > 0.0001
    assert "cannot resolve" in chosen.note
    assert MIN_PERSONS == 2


# --- measuring on labelled embeddings -----------------------------------------------------------


def unit(*rows: list[float]) -> np.ndarray:
    array = np.asarray(rows, np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_non_mated_person_scores_take_the_best_template_and_skip_the_own_person() -> None:
    # Person 0: two templates along x and y; person 1: one along z; person 2: a probe only.
    embeddings = unit([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1])
    person_ids = np.array([0, 0, 1, 2, 1])
    is_template = np.array([True, True, True, False, False])
    counts, comparisons = non_mated_person_scores(embeddings, person_ids, is_template, chunk=2)
    # Probes x (person 0) -> person 1: 0. y -> person 1: 0. z (person 1) -> person 0: 0.
    # (1,1,0)/sqrt2 (person 2) -> person 0: 0.707, person 1: 0.
    # (1,0,1)/sqrt2 (person 1) -> person 0: 0.707.
    assert comparisons == 6
    assert counts[0] == 6 and counts[707] == 2 and counts[708] == 0


def test_non_mated_person_scores_need_two_enrolled_persons() -> None:
    with pytest.raises(CalibrationError):
        non_mated_person_scores(unit([1, 0], [0, 1]), np.array([0, 1]), np.array([True, False]))


# --- JSON ----------------------------------------------------------------------------------------


def test_json_round_trip_keeps_the_distribution() -> None:
    calibration = tail(100_000, LADDER)
    data = calibration.to_dict()
    assert data["format"] == FORMAT and len(data["scores"]["exceed"]) == 601  # zeros trimmed
    again = calibration_from_dict(data)
    assert np.array_equal(again.exceed, calibration.exceed)
    assert (again.comparisons, again.people, again.photos) == (100_000, 50, 100)


def good() -> dict[str, Any]:
    return tail(1000, {0.4: 20}).to_dict()


def broken(change: Any) -> dict[str, Any]:
    data = good()
    change(data)
    return data


BAD_FILES = {
    "not an object": [1, 2],
    "another format": broken(lambda d: d.update(format="other/1")),
    "no scores": broken(lambda d: d.pop("scores")),
    "another grid": broken(lambda d: d["scores"].update(grid_step=0.01)),
    "counts not integers": broken(lambda d: d["scores"].update(exceed=[1.5, 1])),
    "counts rising": broken(lambda d: d["scores"].update(exceed=[10, 20])),
    "negative counts": broken(lambda d: d["scores"].update(exceed=[-1])),
    "more counted than compared": broken(lambda d: d.update(comparisons=5)),
    "comparisons not a number": broken(lambda d: d.update(comparisons="many")),
    "one person": broken(lambda d: d.update(people=1)),
    "boolean photos": broken(lambda d: d.update(photos=True)),
}


@pytest.mark.parametrize("data", BAD_FILES.values(), ids=BAD_FILES)
def test_damaged_calibrations_are_refused_with_a_reason(data: Any) -> None:
    with pytest.raises(CalibrationError) as caught:
        calibration_from_dict(data)
    assert str(caught.value)


def test_rates_are_rounded_to_what_the_counts_support() -> None:
    chosen = choose_threshold(
        fixed=None,
        pack_threshold=PACK,
        calibration=tail(3, {0.4: 1}),
        origin=CalibrationOrigin.SHIPPED,
        target_fpir=0.5,
        persons=2,
        templates=2,
    )
    assert chosen.as_dict()["expected_fpir"] == float(f"{chosen.expected_fpir:.3g}")
    assert not math.isnan(chosen.as_dict()["expected_fpir"])


# --- labelling folders of photos ----------------------------------------------------------------


def test_labels_follow_the_people_in_order() -> None:
    people = {"ann": [Path("a1"), Path("a2")], "bob": [Path("b1")], "cy": [Path("c1"), Path("c2")]}
    paths, ids = labels_of(people)
    assert paths == [Path(p) for p in ("a1", "a2", "b1", "c1", "c2")]
    assert ids.tolist() == [0, 0, 1, 2, 2]


# (person of each photo, face found, templates: each person's first photo with a face)
TEMPLATE_PICKS = {
    "first photos": ([0, 0, 1, 1], [True, True, True, True], [True, False, True, False]),
    "a faceless first photo passes to the next": (
        [0, 0, 1, 1],
        [False, True, True, True],
        [False, True, True, False],
    ),
    "a person without any face has no template": (
        [0, 1, 1],
        [False, True, True],
        [False, True, False],
    ),
}


@pytest.mark.parametrize(
    ("persons", "found", "templates"), TEMPLATE_PICKS.values(), ids=TEMPLATE_PICKS
)
def test_each_person_is_enrolled_with_their_first_usable_photo(
    persons: list[int], found: list[bool], templates: list[bool]
) -> None:
    chosen = first_found(np.array(persons, np.int64), np.array(found))
    assert chosen.tolist() == templates
