"""OpenCV's own YuNet + SFace pipeline on a list of photos: the reference for identification.py.

Runs in its own virtual environment (opencv-python-headless 4.14 + numpy, made by
``identification.py``), never imports facewatch, and is started as a subprocess::

    <venv>/bin/python benchmarks/opencv_reference.py JOB.json OUT.npz

``JOB.json`` names the two ONNX files, the detector's score and NMS thresholds and the photos.
Each photo goes through ``cv2.FaceDetectorYN`` at the photo's own size (``setInputSize`` to its
width and height, as OpenCV's samples do), the largest face is kept, and
``cv2.FaceRecognizerSF.alignCrop`` + ``feature`` embed it. ``OUT.npz`` holds, row i for photo i:
``found`` (N,) bool, ``xyxy`` (N, 4) and ``kps`` (N, 5, 2) in pixels, ``embedding`` (N, 128)
L2-normalised, and ``seconds``: the time spent detecting, aligning and embedding (reading the
files excluded). Progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np


def main(job_path: str, out_path: str) -> int:
    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    detector = cv2.FaceDetectorYN.create(
        job["detector"], "", (320, 320), job["score_threshold"], job["nms_threshold"], 5000
    )
    recognizer = cv2.FaceRecognizerSF.create(job["recognizer"], "")
    paths = job["paths"]
    count = len(paths)
    found = np.zeros(count, bool)
    xyxy = np.zeros((count, 4), np.float32)
    kps = np.zeros((count, 5, 2), np.float32)
    embedding = np.zeros((count, 128), np.float32)
    seconds = 0.0
    for i, path in enumerate(paths):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            continue
        start = time.perf_counter()
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        if faces is not None and len(faces):
            best = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]
            crop = recognizer.alignCrop(image, best)
            feature = recognizer.feature(crop).reshape(-1)
            found[i] = True
            xyxy[i] = [best[0], best[1], best[0] + best[2], best[1] + best[3]]
            kps[i] = best[4:14].reshape(5, 2)
            embedding[i] = feature / max(float(np.linalg.norm(feature)), 1e-12)
        seconds += time.perf_counter() - start
        if (i + 1) % 500 == 0:
            print(f"opencv reference: {i + 1}/{count} photos", file=sys.stderr, flush=True)
    np.savez(
        out_path, found=found, xyxy=xyxy, kps=kps, embedding=embedding, seconds=np.float64(seconds)
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: opencv_reference.py JOB.json OUT.npz", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
