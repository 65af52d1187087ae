"""Identification accuracy on real faces: enroll a few photos per person, identify the others.

People of ../shared/data/faces/identities with at least three photos are enrolled from their
first two (three when they have six or more) and probed with the rest; people with fewer photos
are never enrolled and probe as strangers. Measured on the offline default pack (YuNet + SFace)
at its default operating point: the threshold its shipped calibration gives for a 1 % FPIR at
the watchlist's 67 templates (0.413; it was the pack's 0.363 until 2026-12). The floors below sit
at or just under those figures so that a regression in detection, alignment, embedding, the
index or the matching fails here.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from hamilton import DISTRACTORS

from facewatch.config import load_settings
from facewatch.images import read_image
from facewatch.recognizer.calibration import ThresholdSource
from facewatch.recognizer.engine import FaceEngine
from facewatch.watchlist.service import Photo, Watchlist

#: Measured on 2026-12-03: 108 probes of 28 enrolled people (67 templates), rank-1 at the
#: calibrated threshold 0.981 (106/108: bbt_howard/5.png at 0.384 and bbt_stuart/5.png at 0.403
#: fall under it; 108/108 at 0.363), best candidate right 1.000; 36 photos of 24 strangers, 1
#: named (0.028), as at 0.363: kate_siegel/1.jpg, Angelina Jolie's look-alike (facenet-pytorch's
#: own hard "different" pair), scores 0.496 against her, above any threshold that keeps rank-1.
#: The rank-1 floor leaves no miss to spare; the strangers' ceiling allows that one.
#: With landmarks found at each photo's own resolution and flip-averaged photo embeddings (same
#: day, same shipped calibration): rank-1 at 0.413 0.991 (107/108), best candidate right 1.000,
#: strangers named 1/36.
RANK1_FLOOR = 0.98
RANK1_ANY_THRESHOLD_FLOOR = 0.99
STRANGERS_NAMED_CEILING = 0.03


def split(faces_dir: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]], list[Path]]:
    """(enrollment photos, probe photos) per enrolled person, and the strangers' photos."""
    enroll: dict[str, list[Path]] = {}
    probes: dict[str, list[Path]] = defaultdict(list)
    strangers: list[Path] = []
    for folder in sorted((faces_dir / "identities").iterdir()):
        photos = sorted(p for p in folder.iterdir() if p.is_file())
        if len(photos) < 3:
            strangers.extend(photos)
            continue
        count = 3 if len(photos) >= 6 else 2
        enroll[folder.name] = photos[:count]
        probes[folder.name] = photos[count:]
    return enroll, probes, strangers


@pytest.mark.slow
def test_rank1_accuracy_and_strangers(tmp_path: Path, engine: FaceEngine, faces_dir: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, watchlist={"database_url": f"sqlite:///{tmp_path / 'w.db'}"}
    )
    enroll, probes, strangers = split(faces_dir)
    with Watchlist.open(settings, engine) as watchlist:
        ids = {}
        for name, photos in enroll.items():
            result = watchlist.enroll(
                {"name": name}, [Photo(str(p), p.read_bytes()) for p in photos], largest=True
            )
            ids[result.person.id] = name
        # The default operating point: calibrated for the target FPIR at this size.
        matching = watchlist.match_threshold()
        assert matching.source is ThresholdSource.CALIBRATED, matching
        assert matching.expected_fpir is not None and matching.expected_fpir <= 0.01

        def best(path: Path) -> tuple[str | None, str | None]:
            """(name at the threshold, best candidate's name) for the largest face."""
            image = read_image(path)
            faces = engine.embed([image])[0]
            assert len(faces), f"no face found in {path}"
            largest = faces[[faces.largest()]]
            found = watchlist.identify_faces([largest], [str(path)])[0][0]
            top = found.candidates[0]["person_id"] if found.candidates else None
            return ids.get(found.person_id or -1), ids.get(top or -1)

        results = [(name, *best(p)) for name, paths in probes.items() for p in paths]
        named_strangers = [(p.parent.name, best(p)[0]) for p in strangers if best(p)[0]]

    rank1 = sum(truth == named for truth, named, _ in results) / len(results)
    rank1_any = sum(truth == top for truth, _, top in results) / len(results)
    wrong = [(t, n) for t, n, _ in results if n is not None and n != t]
    stranger_rate = len(named_strangers) / len(strangers)
    print(
        f"threshold {matching.value} ({matching.templates} templates): "
        f"probes {len(results)}: rank-1 {rank1:.3f}, rank-1 any threshold {rank1_any:.3f}, "
        f"wrongly named {len(wrong)}, strangers named {len(named_strangers)}/{len(strangers)}"
    )
    assert len(results) >= 80 and len(strangers) >= 20
    assert rank1 >= RANK1_FLOOR
    assert rank1_any >= RANK1_ANY_THRESHOLD_FLOOR
    assert stranger_rate <= STRANGERS_NAMED_CEILING, named_strangers
    # An enrolled person mistaken for another enrolled person is worse than a miss.
    assert len(wrong) <= 1, wrong


#: A 10-person watchlist: the Hamilton clip's distractors.
TEN_PEOPLE = tuple(DISTRACTORS)
#: Measured on 2026-12-03: 38 templates, calibrated threshold 0.395, 172 photos of the 42 other
#: people probed, 1 named (0.6 %): kate_siegel/1.jpg as angelina_jolie (0.499), her look-alike.
#: At the pack's fixed 0.363 this was 4 of 211 (issue 11). The goal is at most 1 %.
TEN_STRANGERS_NAMED_CEILING = 0.01


@pytest.mark.slow
def test_strangers_against_a_ten_person_watchlist(
    tmp_path: Path, engine: FaceEngine, faces_dir: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path, watchlist={"database_url": f"sqlite:///{tmp_path / 'w.db'}"}
    )
    folders = sorted((faces_dir / "identities").iterdir())
    with Watchlist.open(settings, engine) as watchlist:
        for name in TEN_PEOPLE:
            photos = sorted((faces_dir / "identities" / name).iterdir())
            watchlist.enroll(
                {"name": name}, [Photo(str(p), p.read_bytes()) for p in photos], largest=True
            )
        assert watchlist.match_threshold().source is ThresholdSource.CALIBRATED
        probes = [p for f in folders if f.name not in TEN_PEOPLE for p in sorted(f.iterdir())]
        named = []
        for path in probes:
            faces = engine.embed([read_image(path)])[0]
            if not len(faces):
                continue
            largest = faces[[faces.largest()]]
            found = watchlist.identify_faces([largest], [str(path)])[0][0]
            if found.person is not None:
                named.append((path.parent.name, found.person, found.similarity))
    assert len(probes) >= 150
    assert len(named) / len(probes) <= TEN_STRANGERS_NAMED_CEILING, named
