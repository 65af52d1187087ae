"""InsightFace-format packs end to end: download from a real loopback server, verify, load, detect.

The packs are generated (see ``packs_factory``): no real model is needed and nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from loopback_server import PackServer, Raw, Truncated
from packs_factory import (
    DETECTOR_FILE,
    EXTRA_FILE,
    RECOGNIZER_FILE,
    PlantedFace,
    ScrfdLayout,
    frame_with_faces,
    pack_files,
    reference_embedding,
    write_pack,
    zip_members,
    zip_pack,
)

from facewatch.config import EngineSettings, load_settings
from facewatch.errors import ModelDownloadError, ModelLoadError
from facewatch.pipeline.types import Faces
from facewatch.recognizer.align import align_faces
from facewatch.recognizer.engine import FaceEngine
from facewatch.recognizer.packs import ARCFACE_THRESHOLD, MANIFEST, resolve_pack

pytestmark = pytest.mark.usefixtures("isolated_settings")

NAME = "tinyface_l"
ARCHIVE = f"/packs/{NAME}.zip"

#: detection_size 320x320: a 240x320 frame is letterboxed at scale 1, a 480x640 one at 0.5.
SMALL = (240, 320, 1.0, [PlantedFace(32, 3, 2), PlantedFace(16, 4, 14), PlantedFace(8, 25, 30)])
LARGE = (480, 640, 0.5, [PlantedFace(16, 8, 10)])


def make_settings(
    tmp_path: Path, server: PackServer | None = None, **engine: Any
) -> EngineSettings:
    """CPU settings on a fresh models folder, downloading from ``server`` when given."""
    values: dict[str, Any] = {
        "models_dir": tmp_path / "models",
        "cache_dir": tmp_path / "cache",
        "providers": ["cpu"],
        "detection_size": (320, 320),
        "model_name": NAME,
    }
    if server is not None:
        values["download_url"] = server.url
    return load_settings(engine=values | engine).engine


def serve_pack(
    server: PackServer, layout: ScrfdLayout = "batched", dim: int = 512, *, nested: bool = False
) -> str:
    """Publish the generated pack as ``<NAME>.zip``; return the archive's SHA-256."""
    archive = zip_pack(NAME, pack_files(layout, dim), nested=nested)
    server.serve(f"{NAME}.zip", archive)
    return hashlib.sha256(archive).hexdigest()


def assert_planted(found: Faces, planted: list[PlantedFace], scale: float) -> None:
    """Each planted face decoded once, box and landmarks within a pixel, in any order."""
    assert len(found) == len(planted), found.xyxy
    unmatched = list(range(len(found)))
    for face in planted:
        xyxy, kps = face.expected(scale)
        errors = [float(np.abs(found.xyxy[i] - xyxy).max()) for i in unmatched]
        best = unmatched.pop(int(np.argmin(errors)))
        np.testing.assert_allclose(found.xyxy[best], xyxy, atol=1.0, err_msg=str(face))
        np.testing.assert_allclose(found.kps[best], kps, atol=1.0, err_msg=str(face))
        assert found.score[best] > 0.99


# --- download, resolve, load, detect ----------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True], ids=["files-at-root", "in-folder"])
@pytest.mark.parametrize(
    ("layout", "dim"),
    [("batched", 512), ("batch1", 256), ("flat", 512)],
    ids=["batched", "batch1", "flat"],
)
def test_downloaded_pack_detects_and_embeds(
    tmp_path: Path, pack_server: PackServer, layout: ScrfdLayout, dim: int, nested: bool
) -> None:
    sha = serve_pack(pack_server, layout, dim, nested=nested)
    settings = make_settings(tmp_path, pack_server, download_sha256=sha)

    pack = resolve_pack(settings)

    folder = settings.models_dir / NAME
    assert pack.detector.kind == "scrfd"
    assert pack.detector.path == folder / DETECTOR_FILE
    assert pack.recognizer.path == folder / RECOGNIZER_FILE
    manifest = json.loads((folder / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted([DETECTOR_FILE, EXTRA_FILE, RECOGNIZER_FILE])
    assert manifest["archive_sha256"] == sha
    assert [p.name for p in settings.models_dir.iterdir()] == [NAME]  # no temp folder left

    engine = FaceEngine.load(settings, pack)
    assert engine.embedding_dim == dim
    assert engine.match_threshold == pytest.approx(ARCFACE_THRESHOLD)

    frames = [frame_with_faces(h, w, faces, scale) for h, w, scale, faces in (SMALL, LARGE)]
    results = engine.embed(frames)  # one batch of two frames
    for frame, found, (_, _, scale, planted) in zip(frames, results, (SMALL, LARGE), strict=True):
        assert_planted(found, planted, scale)
        assert found.embedding is not None and found.embedding.shape == (len(planted), dim)
        # Photos are embedded with flip averaging: the crop's and its mirror's, summed.
        crops = align_faces(frame, found.kps)
        both = reference_embedding(crops, dim) + reference_embedding(crops[:, :, ::-1], dim)
        expected = both / np.linalg.norm(both, axis=1, keepdims=True)
        np.testing.assert_allclose(found.embedding, expected, atol=1e-4)


def test_second_resolve_uses_the_local_copy(tmp_path: Path, pack_server: PackServer) -> None:
    serve_pack(pack_server)  # no pinned checksum: allowed, with a logged warning
    settings = make_settings(tmp_path, pack_server)

    first = resolve_pack(settings)
    second = resolve_pack(settings)
    FaceEngine.load(settings)

    assert pack_server.requests == [ARCHIVE]
    assert second == first


# --- download failures ------------------------------------------------------------------------


def test_checksum_mismatch_is_refused_and_leaves_nothing(
    tmp_path: Path, pack_server: PackServer
) -> None:
    serve_pack(pack_server)
    settings = make_settings(tmp_path, pack_server, download_sha256="0" * 64)

    with pytest.raises(ModelDownloadError, match="checksum mismatch") as caught:
        resolve_pack(settings)

    assert caught.value.url == f"{pack_server.url}/{NAME}.zip"
    assert caught.value.url in str(caught.value)
    assert list(settings.models_dir.iterdir()) == []


def test_unreachable_server_says_offline(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(tmp_path, download_url=f"http://127.0.0.1:{port}/packs")

    with pytest.raises(ModelDownloadError, match="offline") as caught:
        resolve_pack(settings)

    assert caught.value.url == f"http://127.0.0.1:{port}/packs/{NAME}.zip"
    assert "cannot download" in str(caught.value)
    assert list(settings.models_dir.iterdir()) == []


def test_missing_pack_with_downloads_off(tmp_path: Path, pack_server: PackServer) -> None:
    serve_pack(pack_server)
    settings = make_settings(tmp_path, pack_server, allow_download=False)

    with pytest.raises(ModelLoadError, match="downloads are off"):
        resolve_pack(settings)

    assert pack_server.requests == []


def _pack_zip() -> bytes:
    return zip_pack(NAME, pack_files(), nested=False)


BAD_ARCHIVES: list[tuple[str, Any, str]] = [
    ("http-404", None, "404"),
    ("not-a-zip", b"<html>moved</html>", "not a valid zip archive"),
    ("no-models", zip_members({"README.txt": b"nothing here"}), "no .onnx model"),
    ("truncated", "truncated", "truncated download"),
    ("not-http", Raw(b"SSH-2.0-OpenSSH_9.6\r\n"), "not HTTP"),
    ("parent-member", {"../evil.onnx": b"x", DETECTOR_FILE: b"x"}, "escapes the folder"),
    ("nested-parent-member", {f"{NAME}/../../evil.onnx": b"x"}, "escapes the folder"),
    ("absolute-member", {"/tmp/evil.onnx": b"x"}, "escapes the folder"),
]


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in BAD_ARCHIVES], ids=[c[0] for c in BAD_ARCHIVES]
)
def test_bad_archive_is_refused(
    tmp_path: Path, pack_server: PackServer, body: Any, message: str
) -> None:
    if body == "truncated":
        archive = _pack_zip()
        pack_server.serve(f"{NAME}.zip", Truncated(archive[: len(archive) // 2], len(archive)))
    elif isinstance(body, dict):
        pack_server.serve(f"{NAME}.zip", zip_members(body))
    elif body is not None:
        pack_server.serve(f"{NAME}.zip", body)
    settings = make_settings(tmp_path, pack_server)

    with pytest.raises(ModelDownloadError, match=message) as caught:
        resolve_pack(settings)

    assert caught.value.url == f"{pack_server.url}/{NAME}.zip"
    assert list(settings.models_dir.iterdir()) == []
    assert not list(tmp_path.rglob("evil.onnx"))


# --- corruption after download ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "damage"),
    [(RECOGNIZER_FILE, "flip"), (RECOGNIZER_FILE, "truncate"), (DETECTOR_FILE, "truncate")],
)
def test_file_corrupted_after_download(
    tmp_path: Path, pack_server: PackServer, filename: str, damage: str
) -> None:
    serve_pack(pack_server)
    settings = make_settings(tmp_path, pack_server)
    resolve_pack(settings)
    path = settings.models_dir / NAME / filename
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if damage == "flip":
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        onnx.load_from_string(bytes(data))  # still parses: only the checksum can tell
    else:
        del data[middle:]
    path.write_bytes(bytes(data))

    with pytest.raises(ModelLoadError, match="checksum mismatch") as caught:
        resolve_pack(settings)

    assert caught.value.path == str(path)
    assert pack_server.requests == [ARCHIVE]  # reported, not silently downloaded again


# --- mixing packs and folders -----------------------------------------------------------------


def test_yunet_detector_with_a_downloaded_recognizer(
    tmp_path: Path, pack_server: PackServer, model_cache: Path
) -> None:
    serve_pack(pack_server, dim=256)
    settings = make_settings(tmp_path, pack_server, detector="yunet", cache_dir=model_cache)

    pack = resolve_pack(settings)

    assert pack.detector.kind == "yunet"
    assert pack.recognizer.path == settings.models_dir / NAME / RECOGNIZER_FILE
    engine = FaceEngine.load(settings, pack)
    assert engine.embedding_dim == 256
    assert engine.match_threshold == pytest.approx(ARCFACE_THRESHOLD)


def test_builtin_detector_with_a_pack_folder_recognizer(tmp_path: Path, model_cache: Path) -> None:
    folder = write_pack(tmp_path / "my packs" / "custom", pack_files(dim=128))
    settings = make_settings(
        tmp_path,
        model_name="yunet_sface",
        recognizer=str(folder),
        cache_dir=model_cache,
        allow_download=False,
    )

    pack = resolve_pack(settings)

    assert pack.detector.kind == "yunet"
    assert pack.recognizer.path == folder / RECOGNIZER_FILE
    assert pack.recognizer.match_threshold == pytest.approx(ARCFACE_THRESHOLD)
    assert FaceEngine.load(settings, pack).embedding_dim == 128


def test_folder_path_as_model_name(tmp_path: Path) -> None:
    folder = write_pack(tmp_path / "custom", pack_files("flat", 256))
    settings = make_settings(tmp_path, model_name=str(folder), allow_download=False)

    pack = resolve_pack(settings)

    assert (pack.detector.kind, pack.detector.path) == ("scrfd", folder / DETECTOR_FILE)
    assert pack.recognizer.path == folder / RECOGNIZER_FILE
    engine = FaceEngine.load(settings, pack)
    height, width, scale, planted = SMALL
    (found,) = engine.detect([frame_with_faces(height, width, planted, scale)])
    assert_planted(found, planted, scale)


def test_folder_without_a_recognizer(tmp_path: Path) -> None:
    files = pack_files()
    del files[RECOGNIZER_FILE]
    folder = write_pack(tmp_path / "partial", files)
    settings = make_settings(tmp_path, model_name=str(folder), allow_download=False)

    with pytest.raises(ModelLoadError, match="no recognizer model") as caught:
        resolve_pack(settings)

    assert EXTRA_FILE in str(caught.value)


# --- names, checksums per pack, limits, concurrent downloads ------------------------------------


def test_checksums_per_pack_name(tmp_path: Path, pack_server: PackServer) -> None:
    sha = serve_pack(pack_server)
    wrong = f"other_pack={'0' * 64},{NAME}={sha}"
    assert resolve_pack(make_settings(tmp_path, pack_server, download_sha256=wrong)).recognizer
    assert pack_server.requests == [ARCHIVE]
    with pytest.raises(ModelDownloadError, match="checksum mismatch"):
        resolve_pack(
            make_settings(tmp_path / "b", pack_server, download_sha256=f"{NAME}={'1' * 64}")
        )


def test_a_bare_name_never_means_a_folder_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pack(tmp_path / NAME, pack_files("batched", 512))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="downloads are off"):
        resolve_pack(make_settings(tmp_path / "elsewhere", allow_download=False))
    assert resolve_pack(make_settings(tmp_path / "x", model_name=f"./{NAME}")).recognizer


@pytest.mark.parametrize("name", ["buffalo l", "a?b", "-x", "pack%2f"])
def test_odd_pack_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelLoadError, match="neither a known pack"):
        resolve_pack(make_settings(tmp_path, model_name=name))


def test_oversized_archives_are_refused(
    tmp_path: Path, pack_server: PackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facewatch.recognizer.packs as packs

    serve_pack(pack_server)
    monkeypatch.setattr(packs, "MAX_PACK_BYTES", 10_000)
    with pytest.raises(ModelDownloadError, match="over the limit"):
        resolve_pack(make_settings(tmp_path, pack_server))
    assert list((tmp_path / "models").iterdir()) == []


def test_concurrent_first_use_downloads_once(tmp_path: Path, pack_server: PackServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    serve_pack(pack_server)
    settings = make_settings(tmp_path, pack_server)
    with ThreadPoolExecutor(4) as pool:
        packs = list(pool.map(lambda _: resolve_pack(settings), range(4)))
    assert pack_server.requests == [ARCHIVE]
    assert len({p.recognizer.sha256 for p in packs}) == 1
