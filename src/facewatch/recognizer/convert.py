"""Make shipped ONNX files loadable everywhere: fp32 weights, dynamic batch, no stray inputs.

The offline default models come block-quantized (``DequantizeLinear`` with ``block_size``), which
several ONNX Runtime builds and execution providers refuse; SFace also lists its weights as graph
inputs and fixes the batch at 1. :func:`convert_model` rewrites such a graph once:

* every ``DequantizeLinear`` whose inputs are constants becomes an fp32 initializer,
* ``Reshape`` of a constant by a constant shape is folded into the initializer,
* initializers and inputs no node reads are removed from the graph inputs, unused
  initializers dropped,
* the batch dimension of inputs, outputs and activation reshapes becomes symbolic
  (``Reshape`` targets of ``[1, ...]`` become ``[0, ...]``, "copy the batch").

:func:`cached_conversion` keys the result by the source file's SHA-256 so the work is done once,
and keeps the converted file's own SHA-256 beside it (``<file>.sha256``, ``sha256sum`` format):
a cached file that no longer matches (a damaged disk, an interrupted copy of the cache) is
converted again rather than failing every start or, worse, loading damaged weights.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from facewatch.errors import ModelLoadError
from facewatch.files import atomic_write, sha256_file

log = logging.getLogger(__name__)

#: Bump when the rewrite changes, so stale cached conversions are not reused.
CONVERSION_VERSION = 1


def dequantize(
    quantized: NDArray[np.integer],
    scale: NDArray[np.floating],
    zero_point: NDArray[np.integer] | None,
    axis: int,
    block_size: int,
) -> NDArray[np.float32]:
    """Numpy version of ONNX ``DequantizeLinear`` (per-tensor, per-axis and blocked)."""
    q = quantized.astype(np.float32)
    zp = (
        np.zeros_like(scale, dtype=np.float32)
        if zero_point is None
        else zero_point.astype(np.float32)
    )
    s = scale.astype(np.float32)
    if s.ndim == 0 or s.size == 1 and q.ndim != 1 and block_size == 0:
        return ((q - zp.reshape(())) * s.reshape(())).astype(np.float32)
    axis = axis % q.ndim
    if block_size > 0:
        # Blocked: scale has q's shape with ceil(dim / block_size) along `axis`.
        s = np.repeat(s, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
    else:
        shape = [1] * q.ndim
        shape[axis] = q.shape[axis]
        s, zp = s.reshape(shape), zp.reshape(shape)
    return ((q - zp) * s).astype(np.float32)


def convert_model(model: onnx.ModelProto, *, dynamic_batch: bool = True) -> onnx.ModelProto:
    """Rewrite ``model`` in place as described in the module docstring and return it."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constant_values: dict[str, np.ndarray] = {}

    def constant(name: str) -> np.ndarray | None:
        if name in constant_values:
            return constant_values[name]
        if name in inits:
            constant_values[name] = numpy_helper.to_array(inits[name])
            return constant_values[name]
        return None

    kept_nodes = []
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            values = [constant(name) if name else None for name in node.input]
            if values[0] is not None and values[1] is not None:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                zero_point = values[2] if len(values) > 2 else None
                result = dequantize(
                    values[0],
                    values[1],
                    zero_point,
                    int(attrs.get("axis", 1)),
                    int(attrs.get("block_size", 0)),
                )
                constant_values[node.output[0]] = result
                folded[node.output[0]] = result
                continue
        if node.op_type == "Reshape":
            data, shape = constant(node.input[0]), constant(node.input[1])
            if data is not None and shape is not None:
                result = data.reshape([d if d != 0 else data.shape[i] for i, d in enumerate(shape)])
                constant_values[node.output[0]] = result
                folded[node.output[0]] = result
                continue
        kept_nodes.append(node)

    del graph.node[:]
    graph.node.extend(kept_nodes)
    for name, value in folded.items():
        graph.initializer.append(numpy_helper.from_array(value, name))

    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    remaining = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(remaining)

    # Graph inputs that are initializers, or that no node reads (SFace lists its float weights
    # although only their quantized copies are used), are not inputs a caller should feed.
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)

    if dynamic_batch:
        _make_batch_dynamic(model)
    del graph.value_info[:]
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"converted model fails the ONNX checker: {one_line(exc)}") from exc
    return model


def _make_batch_dynamic(model: onnx.ModelProto) -> None:
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            fixed = shape.copy()
            fixed[0] = 0  # 0 copies the input's batch dimension
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, node.input[1]))


def make_spatial_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Let a fully convolutional detector take any height/width (and any anchor count)."""
    graph = model.graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for dim, name in ((dims[2], "height"), (dims[3], "width")):
                dim.ClearField("dim_value")
                dim.dim_param = name
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 3:
            dims[1].ClearField("dim_value")
            dims[1].dim_param = f"{value.name}_anchors"
    return model


def cached_conversion(
    source: Path, cache_dir: Path, *, spatial_dynamic: bool = False, dynamic_batch: bool = True
) -> Path:
    """Return a converted copy of ``source``, converting it only when no intact cached copy exists.

    The cache key is the source's SHA-256 plus the conversion options, so a changed source or a
    changed rewrite never reuses a stale file. The write is atomic (temp file, fsync, rename);
    a cached copy that fails its checksum is converted again.

    Raises:
        ModelLoadError: ``source`` is not a readable ONNX model, or the cache cannot be written.
    """
    digest = sha256_file(source)
    flags = f"b{int(dynamic_batch)}s{int(spatial_dynamic)}v{CONVERSION_VERSION}"
    target = cache_dir / f"{source.stem}-{digest[:16]}-{flags}.onnx"
    if cached_file_is_intact(target):
        return target
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError... for bad files
        raise ModelLoadError(
            f"not a readable ONNX model ({one_line(exc)}); the file is damaged, truncated or not "
            "an ONNX model: reinstall or replace it",
            path=str(source),
        ) from exc
    convert_model(model, dynamic_batch=dynamic_batch)
    if spatial_dynamic:
        make_spatial_dynamic(model)
    write_cached_file(target, model.SerializeToString())
    return target


def checksum_path(path: Path) -> Path:
    """Where the SHA-256 of a cached file is kept."""
    return path.with_name(f"{path.name}.sha256")


def cached_file_is_intact(path: Path) -> bool:
    """Whether ``path`` exists and matches the checksum written with it.

    A damaged or unverifiable copy is logged; the caller then writes it again with
    :func:`write_cached_file`.
    """
    if not path.is_file():
        return False
    try:
        recorded = checksum_path(path).read_text(encoding="ascii").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        log.info("cached model %s has no readable checksum; rebuilding it", path)
        return False
    try:
        actual = sha256_file(path)
    except OSError:
        return False
    if actual != recorded:
        log.warning("cached model %s is damaged (checksum mismatch); rebuilding it", path)
        return False
    return True


def write_cached_file(path: Path, data: bytes) -> None:
    """Write a cached model and then its checksum, each atomically.

    Raises:
        ModelLoadError: the cache folder cannot be written (read-only, full).
    """
    try:
        atomic_write(path, data)
        line = f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
        atomic_write(checksum_path(path), line.encode("ascii"))
    except OSError as exc:
        raise ModelLoadError(
            f"cannot write the converted model ({exc.strerror or exc}); set FACE_AI_CACHE_DIR "
            "to a writable folder with free space",
            path=str(path),
        ) from exc


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (ONNX and ONNX Runtime messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__
