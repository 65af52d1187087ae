"""Execution providers: what is asked for, what the session runs on, and the fallback rule."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from facewatch.errors import ModelLoadError, ProviderFallbackError
from facewatch.recognizer.session import CPU, CUDA, open_session, resolve_providers, wants_gpu


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path


def test_resolve_providers() -> None:
    assert resolve_providers(["cpu"]) == [CPU]
    assert resolve_providers(["cuda", "cpu"]) == [CUDA, CPU]
    assert resolve_providers(["cuda"]) == [CUDA, CPU]  # CPU always last, for unsupported ops
    auto = resolve_providers(["auto"])
    assert auto[-1] == CPU
    assert (CUDA in auto) == (CUDA in ort.get_available_providers())


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(["auto"], False), (["cpu"], False), (["cuda", "cpu"], True), (["tensorrt"], True)],
)
def test_wants_gpu(requested: list[str], expected: bool) -> None:
    assert wants_gpu(requested) is expected


def test_cpu_session_reports_cpu(tiny_model: Path) -> None:
    session = open_session(tiny_model, ["cpu"])
    assert session.get_providers() == [CPU]


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_gpu_asked_but_cpu_used_is_refused(tiny_model: Path) -> None:
    with pytest.raises(ProviderFallbackError) as caught:
        open_session(tiny_model, ["cuda"])
    assert caught.value.actual == [CPU]
    assert "setup --gpu" in str(caught.value)  # the hint says how to install the GPU build
    # ...unless the fallback is allowed explicitly.
    assert open_session(tiny_model, ["cuda"], allow_cpu_fallback=True).get_providers() == [CPU]


def test_bad_model_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        open_session(path, ["cpu"])
