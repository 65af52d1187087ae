"""The shipped calibration's prediction against strangers it never saw, on real faces.

Photo 1 of the first 100 people of ``faces_scale/identities`` is the gallery; the first 300
single-photo strangers of ``faces_scale/distractors`` (left out of the calibration) probe it.
Measured on 2026-12-03 (offline default pack, the face nearest each photo's centre): at the
pack's 0.363, 28 of 300 named (9.3 %; predicted 9.9 %); at the calibrated threshold for 5 %
(0.382), 13 (4.3 %; predicted 4.9 %); at the calibrated threshold for 1 % (0.423), 1 (0.3 %).
``benchmarks/calibrate_packs.py`` runs the same check on all 2,000 strangers at 10, 100 and 694
people.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facewatch.recognizer.calibrate import embed_photos
from facewatch.recognizer.calibration_files import load_calibration
from facewatch.recognizer.engine import FaceEngine
from facewatch.recognizer.packs import SFACE_THRESHOLD

GALLERY = 100
STRANGERS = 300


@pytest.mark.slow
def test_predicted_fpir_holds_on_unseen_strangers(
    engine: FaceEngine, faces_scale_dir: Path
) -> None:
    calibration, _ = load_calibration(engine.pack, Path("/nonexistent"))
    assert calibration is not None
    people = sorted(p for p in (faces_scale_dir / "identities").iterdir() if p.is_dir())
    # LFW photos are cropped around their subject: the face nearest the centre is theirs.
    firsts = [sorted(p.iterdir())[0] for p in people[:GALLERY]]
    gallery = embed_photos(engine, firsts, pick="central")
    distractors = sorted((faces_scale_dir / "distractors").iterdir())[:STRANGERS]
    strangers = embed_photos(engine, distractors, pick="central")
    assert gallery.found.all() and strangers.found.all()
    best = (strangers.embeddings @ gallery.embeddings.T).max(axis=1)

    def measured(threshold: float) -> float:
        return float(np.mean(best >= threshold))

    for threshold in (SFACE_THRESHOLD, calibration.threshold_for(0.05, GALLERY).threshold):
        predicted = calibration.expected_fpir(threshold, GALLERY)
        assert 0.5 <= measured(threshold) / predicted <= 2.0, (threshold, predicted)
    default = calibration.threshold_for(0.01, GALLERY)
    assert not default.clamped
    # The default operating point: at most 1 % of strangers named against 100 people.
    assert measured(default.threshold) <= 0.01
    # ... where the pack's fixed threshold names nearly one in ten.
    assert measured(SFACE_THRESHOLD) > 0.05
