"""Command line: ``facewatch doctor|detect|embed|verify|demo|config``, the watchlist commands
of :mod:`facewatch.cli_watchlist`, ``calibrate`` (:mod:`facewatch.cli_calibrate`) and ``watch``
(:mod:`facewatch.cli_watch`).

Every command writes JSON lines on stdout (one object per image, or one object) and logs on
stderr. Bad input gives a one-line ``facewatch: error: ...`` on stderr and a non-zero exit code:
1 when some input was refused (the other inputs are still processed), 2 when nothing could run
(bad settings, unusable models).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facewatch import __version__
from facewatch.cli_calibrate import add_calibrate_command
from facewatch.cli_serve import add_serve_command
from facewatch.cli_users import add_user_commands
from facewatch.cli_watch import add_watch_command
from facewatch.cli_watchlist import add_commands
from facewatch.config import (
    Settings,
    describe_settings,
    load_settings,
    settings_reference_markdown,
)
from facewatch.errors import ConfigError, FacewatchError, ImageError, NoFaceError
from facewatch.images import read_image
from facewatch.recognizer.engine import FaceEngine

EXIT_INPUT = 1
EXIT_FATAL = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_FATAL)
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return command(args, settings)
    except FacewatchError as exc:
        if settings.debug:
            raise
        return _fail(str(exc), EXIT_FATAL)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`facewatch ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facewatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"facewatch {__version__}")
    parser.add_argument("--config", type=Path, help="YAML settings file (or FACE_AI_CONFIG)")
    parser.add_argument(
        "--pack", help="model pack (FACE_AI_MODEL_NAME), e.g. yunet_sface, buffalo_l"
    )
    parser.add_argument("--detector", help="detector from another pack (FACE_AI_DETECTOR)")
    parser.add_argument("--recognizer", help="recognizer from another pack (FACE_AI_RECOGNIZER)")
    parser.add_argument(
        "--providers", help="execution providers, e.g. cuda,cpu (FACE_AI_PROVIDERS)"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines output (the default)")
    parser.add_argument("--data-dir", type=Path, help="data directory (FACE_AI_DATA_DIR)")
    # Also accepted after a watchlist command; SUPPRESS keeps it from hiding the global one.
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir", type=Path, default=argparse.SUPPRESS, help="data directory (FACE_AI_DATA_DIR)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="versions, model pack, providers in use, device")
    doctor.add_argument(
        "--require-gpu", action="store_true", help="exit 1 unless both models run on a GPU provider"
    )
    doctor.set_defaults(handler=_doctor)

    for name, handler, text in (
        ("detect", _detect, "faces, landmarks and quality per image"),
        ("embed", _embed, "like detect, with each face's embedding"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
        sub.set_defaults(handler=handler)

    verify = commands.add_parser(
        "verify", help="are the largest faces of two images the same person"
    )
    verify.add_argument("image_a", type=Path, metavar="IMAGE_A")
    verify.add_argument("image_b", type=Path, metavar="IMAGE_B")
    verify.set_defaults(handler=_verify)

    demo = commands.add_parser("demo", help="detect and recognise faces in the sample photos")
    demo.add_argument("--faces-dir", type=Path, help="sample data (default: ../shared/data/faces)")
    demo.set_defaults(handler=_demo)

    config = commands.add_parser("config", help="every setting with its environment names")
    config.add_argument(
        "--markdown",
        action="store_true",
        help="print the configuration reference page (docs/configuration.md) instead",
    )
    config.set_defaults(handler=_config)

    add_commands(commands, data_dir)
    add_calibrate_command(commands, data_dir)
    add_user_commands(commands, data_dir)
    add_watch_command(commands, data_dir)
    add_serve_command(commands, data_dir)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    engine: dict[str, Any] = {}
    for flag, key in (
        ("pack", "model_name"),
        ("detector", "detector"),
        ("recognizer", "recognizer"),
        ("providers", "providers"),
    ):
        if getattr(args, flag):
            engine[key] = getattr(args, flag)
    if not engine:
        return load_settings(args.config, **overrides)
    # Flags win over the environment and the file, field by field.
    base = load_settings(args.config)
    return load_settings(args.config, engine={**base.engine.model_dump(), **engine}, **overrides)


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int) -> int:
    print(f"facewatch: error: {message}", file=sys.stderr)
    return code


def _load_images(
    paths: Sequence[Path], settings: Settings
) -> tuple[list[tuple[Path, NDArray[np.uint8]]], int]:
    """Decode every path; report the failures on stderr and count them."""
    loaded, failures = [], 0
    for path in paths:
        try:
            loaded.append((path, read_image(path, max_pixels=settings.engine.max_image_pixels)))
        except ImageError as exc:
            failures += 1
            _fail(str(exc), EXIT_INPUT)
    return loaded, failures


def _run_images(args: argparse.Namespace, settings: Settings, *, with_embedding: bool) -> int:
    loaded, failures = _load_images(args.images, settings)
    if loaded:
        engine = FaceEngine.load(settings.engine)
        images = [image for _, image in loaded]
        results = engine.embed(images) if with_embedding else engine.detect(images)
        for (path, _), faces in zip(loaded, results, strict=True):
            _emit(
                {
                    "image": str(path),
                    "faces": [
                        faces.record(i, with_embedding=with_embedding) for i in range(len(faces))
                    ],
                }
            )
    return EXIT_INPUT if failures else 0


def _detect(args: argparse.Namespace, settings: Settings) -> int:
    return _run_images(args, settings, with_embedding=False)


def _embed(args: argparse.Namespace, settings: Settings) -> int:
    return _run_images(args, settings, with_embedding=True)


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    loaded, failures = _load_images([args.image_a, args.image_b], settings)
    if failures:
        return EXIT_INPUT
    engine = FaceEngine.load(settings.engine)
    try:
        result = engine.verify(loaded[0][1], loaded[1][1])
    except NoFaceError as exc:
        return _fail(str(exc), EXIT_INPUT)
    _emit(
        {
            "same": result.same,
            "similarity": round(result.similarity, 6),
            "threshold": result.threshold,
        }
    )
    return 0


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    import onnxruntime as ort

    from facewatch.recognizer.session import (
        GPU_PROVIDERS,
        gpu_install_hint,
        onnxruntime_distributions,
    )

    report: dict[str, Any] = {
        "facewatch": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": {
            "version": ort.__version__,
            "distributions": onnxruntime_distributions(),
            "available_providers": ort.get_available_providers(),
            "device": ort.get_device(),
        },
        "device": _device(),
        "faiss": _faiss(),
        "settings": {
            "providers": settings.engine.providers,
            "allow_cpu_fallback": settings.engine.allow_cpu_fallback,
        },
        "warnings": [],
    }
    dists = report["onnxruntime"]["distributions"]
    if "onnxruntime" in dists and "onnxruntime-gpu" in dists:
        report["warnings"].append(gpu_install_hint())
    code = 0
    try:
        engine = FaceEngine.load(settings.engine)
    except FacewatchError as exc:
        report["error"] = str(exc)
        code = EXIT_FATAL
    else:
        report["pack"] = engine.describe()
        report["providers_in_use"] = engine.providers
        on_gpu = all(any(p in GPU_PROVIDERS for p in used) for used in engine.providers.values())
        report["on_gpu"] = on_gpu
        if args.require_gpu and not on_gpu:
            report["error"] = "the models do not run on a GPU. " + gpu_install_hint()
            code = EXIT_INPUT
    _emit(report)
    if "error" in report:
        # The report holds every fact; the error also goes where people read errors.
        _fail(report["error"], code)
    return code


def _device() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": _gpus()}


def _faiss() -> dict[str, Any]:
    """FAISS build and the GPUs it sees (the watchlist index runs there when there are any)."""
    try:
        import faiss
    except ImportError as exc:
        return {"installed": False, "error": str(exc)}
    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    return {
        "installed": True,
        "version": getattr(faiss, "__version__", "?"),
        "gpus": gpus,
        "device": "gpu" if gpus else "cpu",
    }


def _gpus() -> list[str]:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _config(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        sys.stdout.write(settings_reference_markdown())
        return 0
    for row in describe_settings():
        _emit(row)
    return 0


# --- demo ----------------------------------------------------------------------------------------

DEMO_GALLERY = {
    "barack_obama": "identities/barack_obama/1.jpg",
    "joe_biden": "identities/joe_biden/1.jpg",
    "kit_harington": "identities/kit_harington/1.jpeg",
    "rose_leslie": "identities/rose_leslie/1.jpg",
}
DEMO_SCENES = (
    "groups/fr_two_people.jpg",
    "groups/fr_obama_and_biden.jpg",
    "groups/fr_kit_with_rose.jpg",
)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    root = args.faces_dir or Path(os.environ.get("FACEWATCH_TEST_FACES", "../shared/data/faces"))
    missing = [p for p in (*DEMO_GALLERY.values(), *DEMO_SCENES) if not (root / p).is_file()]
    if missing:
        return _fail(
            f"sample photos not found under {root} (pass --faces-dir): {missing[0]}", EXIT_FATAL
        )
    from facewatch.watchlist.service import Photo, Watchlist

    engine = FaceEngine.load(settings.engine)
    with Watchlist.open(settings, engine) as watchlist:
        # The sample people join the watchlist once; later runs find them there.
        for name, relative in DEMO_GALLERY.items():
            if not watchlist.store.persons_named(name):
                path = root / relative
                watchlist.enroll({"name": name}, [Photo(str(path), path.read_bytes())])
        images = [read_image(root / p) for p in DEMO_SCENES]
        found = watchlist.identify(images, list(DEMO_SCENES))
        status = watchlist.status()
    recognised = 0
    for path, faces in zip(DEMO_SCENES, found, strict=True):
        recognised += sum(face.person is not None for face in faces)
        people = [
            {
                "bbox": face.bbox,
                "person": face.person,
                "person_id": face.person_id,
                "similarity": face.similarity,
            }
            for face in faces
        ]
        _emit({"image": path, "faces": people})
    _emit(
        {
            "summary": {
                "pack": engine.pack.name,
                "providers": engine.providers,
                "gallery": list(DEMO_GALLERY),
                "faces": sum(len(f) for f in found),
                "recognised": recognised,
                "threshold": status["threshold"],
                "watchlist": {
                    "store": status["store"]["url"],
                    "persons": status["store"]["persons"],
                    "index": f"{status['index']['backend']} {status['index']['kind']} "
                    f"on {status['index']['device']}",
                },
            }
        }
    )
    return 0
