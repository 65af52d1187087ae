"""fp32 conversion of quantised graphs: DequantizeLinear semantics and the graph rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from facewatch.recognizer.convert import cached_conversion, convert_model, dequantize


@pytest.mark.parametrize(
    ("q", "scale", "zp", "axis", "block", "expected"),
    [
        # per tensor
        ([[1, 2], [3, 4]], [0.5], [1], 1, 0, [[0.0, 0.5], [1.0, 1.5]]),
        # per axis (axis 0: one scale per row)
        ([[1, 2], [3, 4]], [1.0, 10.0], [0, 1], 0, 0, [[1.0, 2.0], [20.0, 30.0]]),
        # blocked along axis 1, block 2: scales (2, 2) for a (2, 4) tensor
        (
            [[1, 1, 1, 1], [2, 2, 2, 2]],
            [[1.0, 2.0], [3.0, 4.0]],
            [[0, 0], [0, 1]],
            1,
            2,
            [[1.0, 1.0, 2.0, 2.0], [6.0, 6.0, 4.0, 4.0]],
        ),
        # blocked with a last partial block (3 values, block 2)
        ([4, 4, 4], [0.5, 0.25], None, 0, 2, [2.0, 2.0, 1.0]),
        # 1-D bias with one block covering more than its length
        ([2, 4], [0.5], [0], 0, 64, [1.0, 2.0]),
    ],
)
def test_dequantize(
    q: list, scale: list, zp: list | None, axis: int, block: int, expected: list
) -> None:
    result = dequantize(
        np.array(q, np.int8),
        np.array(scale, np.float32),
        None if zp is None else np.array(zp, np.int8),
        axis,
        block,
    )
    np.testing.assert_allclose(result, np.array(expected, np.float32))
    assert result.dtype == np.float32


def quantised_model(batch: int = 1) -> tuple[onnx.ModelProto, np.ndarray]:
    """x (batch, 4) @ W^T where W (3, 4) is stored blocked-int8 and reshaped; plus a stray input."""
    q = np.array([[1, -2, 3, -4], [5, 6, -7, 8], [2, 2, 2, 2]], np.int8)
    scale = np.array([[0.5, 0.25], [1.0, 2.0], [0.1, 0.2]], np.float32)
    zp = np.zeros((3, 2), np.int8)
    weight = dequantize(q, scale, zp, 1, 2)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w_flat"], axis=1, block_size=2),
        helper.make_node("Reshape", ["w_flat", "w_shape"], ["w"]),
        helper.make_node("Gemm", ["x", "w"], ["gemm"], transB=1),
        helper.make_node("Reshape", ["gemm", "out_shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "q",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4]),
            helper.make_tensor_value_info("stray_weight", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 1])],
        [
            numpy_helper.from_array(q, "wq"),
            numpy_helper.from_array(scale, "ws"),
            numpy_helper.from_array(zp, "wz"),
            numpy_helper.from_array(np.array([3, 4], np.int64), "w_shape"),
            numpy_helper.from_array(np.array([1, 3, 1], np.int64), "out_shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model, weight


def test_convert_model_folds_weights_and_frees_the_batch() -> None:
    model, weight = quantised_model()
    converted = convert_model(model)
    ops = [node.op_type for node in converted.graph.node]
    assert "DequantizeLinear" not in ops and ops.count("Reshape") == 1
    assert [i.name for i in converted.graph.input] == ["x"]  # stray input gone
    assert converted.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(
        converted.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y[:, :, 0], x @ weight.T, rtol=1e-6)


def test_fixed_batch_is_kept_when_asked() -> None:
    model, _ = quantised_model()
    converted = convert_model(model, dynamic_batch=False)
    assert converted.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_cached_conversion_converts_once(tmp_path: Path) -> None:
    model, _ = quantised_model()
    source = tmp_path / "model.onnx"
    onnx.save(model, source)
    first = cached_conversion(source, tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    assert cached_conversion(source, tmp_path / "cache") == first
    assert first.stat().st_mtime_ns == stamp
    assert not list((tmp_path / "cache").glob("*.tmp"))
    # A changed source gets a new key rather than the stale file.
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((3, 4), np.int8), "wq"))
    onnx.save(model, source)
    assert cached_conversion(source, tmp_path / "cache") != first


def test_unreadable_model_is_a_clear_error(tmp_path: Path) -> None:
    from facewatch.errors import ModelLoadError

    source = tmp_path / "broken.onnx"
    source.write_bytes(b"\x08\x01garbage" * 10)
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        cached_conversion(source, tmp_path / "cache")
