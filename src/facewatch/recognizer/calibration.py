"""A pack's non-mated score distribution and the threshold it gives for a wanted false-alarm rate.

Every face the watchlist sees is compared with every enrolled person, so a stranger gets a name
when their best score against N persons reaches the threshold. With ``p(t)`` the chance that a
stranger's face scores at least ``t`` against one enrolled person with one template, the
expected false-positive identification rate (FPIR) is::

    FPIR(t, N) = 1 - (1 - p(t)) ** N

and the threshold for a target FPIR at N is the smallest ``t`` with ``FPIR(t, N) <= target``.
``p`` is measured on photos of people who were never enrolled against people who were, each
enrolled with one photo: a :class:`Calibration` keeps how many of those comparisons reached
each similarity of a fine grid, and how many there were. A tail estimated from few comparisons
is noise, so ``p`` is only trusted down to :data:`MIN_TAIL_COMPARISONS` comparisons; a target
that needs a rarer tail is met as far as the data reaches, and :class:`ThresholdChoice` says so
(``clamped``).

Persons with several templates: a person's score is the best over their templates, so each
template is one more chance for a stranger. On the shared data (SFace, LFW strangers against
persons enrolled with two photos) a two-template person was beaten 0.79-0.97 times as often as
two one-template persons would be (templates of one person are only a little alike in how
strangers score against them), so N counts templates: slightly conservative, never optimistic.

Nothing here reads files: :mod:`facewatch.recognizer.calibration_files` loads and saves them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facewatch.errors import FacewatchError

FORMAT = "facewatch-calibration/1"
#: The similarity grid the distribution is kept on: from 0 to 1 in steps of 0.001. Thresholds
#: below 0 would name most strangers and are never chosen.
GRID_START = 0.0
GRID_STEP = 0.001
GRID_POINTS = 1001
#: Fewest comparisons at or above a similarity for its rate to be trusted (relative error about
#: 1/sqrt(10), ~30 %); the threshold is never raised past the last such similarity.
MIN_TAIL_COMPARISONS = 10
#: Fewest people a calibration set must have: fewer make too few, too alike comparisons.
MIN_PEOPLE = 20
#: Fewest enrolled persons for which a calibrated threshold is used: against one person the
#: watchlist answers a 1:1 question, which the pack's threshold was chosen for.
MIN_PERSONS = 2
#: Matching sizes the status reports and `facewatch calibrate` prints thresholds for.
REPORTED_SIZES = (10, 100, 1000, 10_000)


class CalibrationError(FacewatchError):
    """A calibration that cannot be used: a damaged file, too few people or comparisons."""


class ThresholdSource(StrEnum):
    """Where the threshold in effect comes from."""

    FIXED = "fixed"  # engine.match_threshold, set by the operator
    CALIBRATED = "calibrated"  # the pack's calibration, for the target FPIR at the watchlist size
    PACK = "pack"  # the pack's own threshold: no calibration, or none usable at this size


class CalibrationOrigin(StrEnum):
    """Whose calibration it is."""

    SHIPPED = "shipped"  # computed from the shared data and shipped in the package
    LOCAL = "local"  # measured by `facewatch calibrate` on the operator's photos


@dataclass(frozen=True, slots=True)
class Calibration:
    """How often a stranger's face reaches each similarity against one enrolled person.

    Attributes:
        exceed: (G,) int64, non-increasing: comparisons scoring at least
            ``GRID_START + i * GRID_STEP`` (cosine similarity), for grid points i = 0..G-1;
            similarities above the last point were never reached.
        comparisons: non-mated (probe photo, enrolled person) comparisons counted.
        people: persons of the calibration set.
        photos: photos of the calibration set that held a face.
        provenance: JSON-ready facts about the data and models (shown, not interpreted).
    """

    exceed: NDArray[np.int64]
    comparisons: int
    people: int
    photos: int
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        exceed = np.asarray(self.exceed)
        if exceed.ndim != 1 or len(exceed) == 0 or len(exceed) > GRID_POINTS:
            raise CalibrationError(f"exceed must hold 1 to {GRID_POINTS} counts")
        if np.any(exceed < 0) or np.any(np.diff(exceed) > 0):
            raise CalibrationError("exceed counts must be non-negative and non-increasing")
        if self.comparisons < 1 or int(exceed[0]) > self.comparisons:
            raise CalibrationError("comparisons must be positive and at least every count")
        if self.people < 2 or self.photos < 2:
            raise CalibrationError("a calibration needs at least two people and two photos")

    # --- the distribution ----------------------------------------------------------------------

    def false_match_rate(self, threshold: float) -> float:
        """p(t): the share of non-mated person comparisons scoring at least ``threshold``.

        Read at the grid point at or below ``threshold``, so never an underestimate by the
        grid; 0 above the highest similarity the data reached.
        """
        index = math.floor((threshold - GRID_START) / GRID_STEP + 1e-9)
        if index >= len(self.exceed):
            return 0.0
        return float(self.exceed[max(index, 0)]) / self.comparisons

    def expected_fpir(self, threshold: float, persons: int) -> float:
        """FPIR(t, N): the chance that a stranger's face beats ``threshold`` against ``persons``."""
        return fpir(self.false_match_rate(threshold), persons)

    @property
    def supported_max(self) -> float:
        """Highest similarity whose rate rests on at least MIN_TAIL_COMPARISONS comparisons."""
        return grid_value(self._last_supported_index())

    @property
    def smallest_rate(self) -> float:
        """The smallest p the data can tell: p at :attr:`supported_max`."""
        return float(self.exceed[self._last_supported_index()]) / self.comparisons

    def _last_supported_index(self) -> int:
        supported = np.flatnonzero(self.exceed >= MIN_TAIL_COMPARISONS)
        return int(supported[-1]) if len(supported) else 0

    # --- the threshold -------------------------------------------------------------------------

    def threshold_for(self, target_fpir: float, persons: int) -> ThresholdChoice:
        """The smallest grid similarity whose expected FPIR at ``persons`` is at most the target.

        A target the data cannot resolve (it needs a rate rarer than :attr:`smallest_rate`)
        gets :attr:`supported_max`, with ``clamped`` set and its (higher) expected FPIR.

        Raises:
            ValueError: ``target_fpir`` outside (0, 1) or ``persons`` below 1.
        """
        if not 0.0 < target_fpir < 1.0:
            raise ValueError(f"target FPIR must lie in (0, 1), not {target_fpir}")
        if persons < 1:
            raise ValueError(f"persons must be at least 1, not {persons}")
        rates = self.exceed / self.comparisons
        fpirs = -np.expm1(persons * np.log1p(-np.minimum(rates, 1.0 - 1e-12)))
        meeting = np.flatnonzero(fpirs <= target_fpir)
        index = int(meeting[0]) if len(meeting) else len(self.exceed)
        last = self._last_supported_index()
        clamped = index > last
        if clamped:
            index = last
        return ThresholdChoice(
            threshold=grid_value(index),
            expected_fpir=float(fpirs[index]),
            clamped=clamped,
        )

    def table(
        self, target_fpir: float, sizes: tuple[int, ...] = REPORTED_SIZES
    ) -> list[dict[str, Any]]:
        """Thresholds for ``target_fpir`` at each size, JSON-ready."""
        rows = []
        for persons in sizes:
            choice = self.threshold_for(target_fpir, persons)
            rows.append({"persons": persons, **choice.as_dict()})
        return rows

    # --- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see :func:`calibration_from_dict`); trailing zero counts dropped."""
        reached = np.flatnonzero(self.exceed > 0)
        kept = self.exceed[: int(reached[-1]) + 1] if len(reached) else self.exceed[:1]
        return {
            "format": FORMAT,
            "provenance": dict(self.provenance),
            "people": self.people,
            "photos": self.photos,
            "comparisons": self.comparisons,
            "scores": {
                "grid_start": GRID_START,
                "grid_step": GRID_STEP,
                "exceed": [int(v) for v in kept],
            },
        }


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """A threshold chosen for a target FPIR and what it is expected to give.

    Attributes:
        threshold: cosine similarity.
        expected_fpir: FPIR the calibration predicts at that threshold and size.
        clamped: the target needs a tail rarer than the data resolves; ``threshold`` is the
            highest similarity it supports and ``expected_fpir`` exceeds the target.
    """

    threshold: float
    expected_fpir: float
    clamped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "expected_fpir": round_rate(self.expected_fpir),
            "clamped": self.clamped,
        }


@dataclass(frozen=True, slots=True)
class MatchThreshold:
    """The threshold in effect for identification and where it comes from.

    Attributes:
        value: cosine similarity a person's best score must reach to be named.
        source: fixed by the operator, calibrated, or the pack's.
        target_fpir: the FPIR asked for (``watchlist.target_fpir``).
        persons: enrolled persons the threshold was chosen for.
        templates: their templates, each one chance for a stranger (the N of the FPIR).
        expected_fpir: what the calibration predicts at ``value`` and ``templates`` (None
            without a calibration).
        calibration: whose calibration (None without one).
        clamped: the calibration could not reach the target (see :class:`ThresholdChoice`).
        note: why the source is what it is, for people reading the status.
    """

    value: float
    source: ThresholdSource
    target_fpir: float
    persons: int
    templates: int
    expected_fpir: float | None = None
    calibration: CalibrationOrigin | None = None
    clamped: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.value,
            "source": self.source.value,
            "calibration": self.calibration.value if self.calibration else None,
            "target_fpir": self.target_fpir,
            "persons": self.persons,
            "templates": self.templates,
            "expected_fpir": (
                round_rate(self.expected_fpir) if self.expected_fpir is not None else None
            ),
            "clamped": self.clamped,
            "note": self.note,
        }


def choose_threshold(
    *,
    fixed: float | None,
    pack_threshold: float,
    calibration: Calibration | None,
    origin: CalibrationOrigin | None,
    target_fpir: float,
    persons: int,
    templates: int,
) -> MatchThreshold:
    """The threshold in effect: a fixed one wins, else the calibrated one, else the pack's.

    Args:
        fixed: ``engine.match_threshold`` when the operator set it.
        pack_threshold: the pack's own threshold.
        calibration: the pack's calibration, if it has one.
        origin: whose calibration it is.
        target_fpir: the FPIR asked for, in (0, 1).
        persons: enrolled persons the watchlist compares a face with.
        templates: their templates (at least ``persons`` are counted).
    """
    comparisons = max(templates, persons)
    expected = (
        calibration.expected_fpir(fixed if fixed is not None else pack_threshold, comparisons)
        if calibration is not None
        else None
    )
    pack = MatchThreshold(
        pack_threshold,
        ThresholdSource.PACK,
        target_fpir,
        persons,
        templates,
        expected_fpir=expected,
        calibration=origin if calibration is not None else None,
    )
    if fixed is not None:
        return replace(
            pack,
            value=fixed,
            source=ThresholdSource.FIXED,
            note="engine.match_threshold is set: it wins over the target FPIR",
        )
    if calibration is None:
        return replace(pack, note="no calibration for this pack: its own threshold is used")
    if persons < MIN_PERSONS:
        return replace(
            pack,
            note=f"{persons} enrolled person(s): against one person the pack's own threshold "
            "(made for 1:1 verification) is used; the calibrated one applies from "
            f"{MIN_PERSONS} persons",
        )
    choice = calibration.threshold_for(target_fpir, comparisons)
    note = ""
    if choice.clamped:
        note = (
            f"the calibration ({calibration.comparisons} comparisons) cannot resolve an FPIR of "
            f"{target_fpir:g} at {comparisons} templates: the threshold is the highest it "
            "supports, expected to give more false alarms than asked; run `facewatch "
            "calibrate` with more people"
        )
    return replace(
        pack,
        value=choice.threshold,
        source=ThresholdSource.CALIBRATED,
        expected_fpir=choice.expected_fpir,
        clamped=choice.clamped,
        note=note,
    )


# --- measuring -------------------------------------------------------------------------------


def fpir(rate: float, persons: int) -> float:
    """1 - (1 - rate) ** persons, exact for tiny rates."""
    if persons <= 0 or rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    return float(-math.expm1(persons * math.log1p(-rate)))


def grid_value(index: int) -> float:
    """The similarity of grid point ``index``, rounded to the grid."""
    return round(GRID_START + index * GRID_STEP, 6)


def round_rate(rate: float) -> float:
    """A rate to 3 significant digits (they come from counts; more would be noise)."""
    return float(f"{rate:.3g}")


def exceed_counts(scores: NDArray[np.floating[Any]]) -> NDArray[np.int64]:
    """(GRID_POINTS,) counts of ``scores`` (any shape) at or above each grid similarity."""
    flat = np.asarray(scores, np.float64).ravel()
    # Bin b holds scores in [grid(b), grid(b+1)); the count at or above grid(i) is the sum of
    # bins i.. . Scores below the grid start are counted nowhere (they never reach a threshold).
    bins = np.floor((flat - GRID_START) / GRID_STEP + 1e-9).astype(np.int64)
    bins = bins[bins >= 0]
    hist = np.bincount(np.minimum(bins, GRID_POINTS - 1), minlength=GRID_POINTS)
    return np.cumsum(hist[::-1])[::-1].astype(np.int64)


def non_mated_person_scores(
    embeddings: NDArray[np.float32],
    person_ids: NDArray[np.int64],
    is_template: NDArray[np.bool_],
    *,
    chunk: int = 1024,
) -> tuple[NDArray[np.int64], int]:
    """Exceed counts of every photo's best score against every other person's templates.

    Each person is enrolled with the photos marked ``is_template``; every photo (templates
    included: they are photos of someone else for all other persons) is a probe against every
    person but its own. A person's score is the best over their templates, as in the index.

    Args:
        embeddings: (M, D) L2-normalised embeddings, one per photo.
        person_ids: (M,) the person of each photo.
        is_template: (M,) bool, photos enrolled as their person's templates.
        chunk: probes scored at a time (bounds memory to chunk x templates floats).

    Returns:
        (GRID_POINTS,) exceed counts and the number of comparisons.

    Raises:
        CalibrationError: fewer than two persons have templates.
    """
    embeddings = np.asarray(embeddings, np.float32)
    person_ids = np.asarray(person_ids, np.int64)
    is_template = np.asarray(is_template, bool)
    if not len(embeddings) == len(person_ids) == len(is_template):
        raise ValueError("embeddings, person_ids and is_template must have the same length")
    templates = embeddings[is_template]
    owners = person_ids[is_template]
    persons, column = np.unique(owners, return_inverse=True)
    if len(persons) < 2:
        raise CalibrationError("at least two persons need a template")
    counts = np.zeros(GRID_POINTS, np.int64)
    comparisons = 0
    for start in range(0, len(embeddings), chunk):
        probes = embeddings[start : start + chunk]
        similarity = probes @ templates.T  # (P, T)
        best = np.full((len(probes), len(persons)), -np.inf, np.float32)
        np.maximum.at(best.T, column, similarity.T)  # best per person, (P, persons)
        own = person_ids[start : start + chunk, None] == persons[None, :]
        scores = best[~own]
        counts += exceed_counts(scores)
        comparisons += scores.size
    return counts, comparisons


def calibration_from_dict(data: Mapping[str, Any]) -> Calibration:
    """A calibration from its JSON form.

    Raises:
        CalibrationError: not a calibration of this format, or its numbers do not hold.
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise CalibrationError(f"not a facewatch calibration (format {FORMAT} expected)")
    try:
        scores = data["scores"]
        if scores["grid_start"] != GRID_START or scores["grid_step"] != GRID_STEP:
            raise CalibrationError(
                f"unexpected similarity grid (start {scores['grid_start']}, step "
                f"{scores['grid_step']}; expected {GRID_START}, {GRID_STEP})"
            )
        counts = scores["exceed"]
        if not isinstance(counts, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in counts
        ):
            raise CalibrationError("scores.exceed must be a list of integers")
        exceed = np.zeros(GRID_POINTS, np.int64)
        exceed[: len(counts)] = counts[:GRID_POINTS]
        provenance = data.get("provenance", {})
        return Calibration(
            exceed=exceed,
            comparisons=_count(data, "comparisons"),
            people=_count(data, "people"),
            photos=_count(data, "photos"),
            provenance=provenance if isinstance(provenance, Mapping) else {},
        )
    except (KeyError, TypeError) as exc:
        raise CalibrationError(f"incomplete calibration: missing or mistyped {exc}") from None


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise CalibrationError(f"{key} must be an integer, not {value!r}")
    return value
