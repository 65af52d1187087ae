"""Tiny generated InsightFace-format model packs, built with ``onnx.helper`` (no torch, no network).

The SCRFD-like detector really looks at the image, so a test can plant a face and check where it
is decoded: at stride ``s`` it average-pools the normalised RGB input over ``s x s`` cells and
fires anchor :data:`FIRING_ANCHOR` of a cell whose mean in one colour channel
(:data:`TRIGGER_CHANNEL`) is bright. Box distances and landmark offsets are constants (in stride
units), different for each anchor, so the decoded box and landmarks follow from the anchor centre
alone. A pure colour square filling one cell of the letterboxed input is a "face".

The ArcFace-like recognizer average-pools the (N, 3, 112, 112) crop to 4x4 and multiplies by fixed
random weights: (N, D) with D chosen by the test. :func:`reference_embedding` computes the same
thing in numpy.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

#: SCRFD exports seen in the wild: ``batched`` (dynamic batch, (N, A, k) outputs, insightface PR
#: #1781), ``batch1`` (batch fixed at 1, (1, A, k) outputs) and ``flat`` (the official buffalo_l
#: export: no batch axis in the outputs, (A, k) with shapes fixed for 640x640).
ScrfdLayout = Literal["batched", "batch1", "flat"]

STRIDES = (8, 16, 32)
ANCHORS = 2
FIRING_ANCHOR = 1
#: RGB channel whose brightness fires each stride (so a square of one colour hits one level only).
TRIGGER_CHANNEL = {8: 1, 16: 0, 32: 2}
#: Box distances (left, top, right, bottom) and landmarks of each anchor, in stride units.
#: Asymmetric so that swapped components show.
BOX_DISTANCES = ((1.0, 1.0, 1.0, 1.0), (1.5, 2.0, 2.5, 3.0))
KPS_OFFSETS = (
    ((0.0, 0.0),) * 5,
    ((-0.75, -0.5), (0.75, -0.5), (0.0, 0.25), (-0.5, 1.0), (0.5, 1.0)),
)
#: Logit = GAIN * (cell mean of the trigger channel) + BIAS: about +10 for a bright cell, -30
#: for a black one; the anchor that never fires has logit -20.
GAIN, BIAS = 20.0, -10.0

OPSET = 17
IR_VERSION = 8  # old enough for every ONNX Runtime release the project supports


@dataclass(frozen=True, slots=True)
class PlantedFace:
    """A face planted at cell (row, col) of the ``stride`` level, in letterboxed input pixels."""

    stride: int
    row: int
    col: int

    def anchor_xy(self) -> tuple[float, float]:
        """The anchor centre of the cell (SCRFD anchors sit on the cell's top-left corner)."""
        return float(self.col * self.stride), float(self.row * self.stride)

    def expected(self, scale: float = 1.0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The (4,) xyxy box and (5, 2) landmarks the detector must report, in frame pixels.

        Args:
            scale: the letterbox scale (input pixels per frame pixel).
        """
        cx, cy = self.anchor_xy()
        left, top, right, bottom = (d * self.stride for d in BOX_DISTANCES[FIRING_ANCHOR])
        xyxy = np.array([cx - left, cy - top, cx + right, cy + bottom], np.float32)
        kps = np.array(KPS_OFFSETS[FIRING_ANCHOR], np.float32) * self.stride + [cx, cy]
        return xyxy / scale, (kps / scale).astype(np.float32)


def frame_with_faces(
    height: int, width: int, faces: Sequence[PlantedFace], scale: float = 1.0
) -> NDArray[np.uint8]:
    """A black (height, width, 3) BGR frame with one pure-colour square per planted face.

    Each square covers exactly the face's cell once the frame is letterboxed by ``scale``; pick
    a scale whose inverse is an integer so that resizing keeps the square's edges sharp.
    """
    frame = np.zeros((height, width, 3), np.uint8)
    for face in faces:
        side = round(face.stride / scale)
        y, x = face.row * side, face.col * side
        if y + side > height or x + side > width:
            raise ValueError(f"{face} does not fit a {width}x{height} frame at scale {scale}")
        frame[y : y + side, x : x + side, 2 - TRIGGER_CHANNEL[face.stride]] = 255  # RGB -> BGR
    return frame


# --- ONNX building blocks ---------------------------------------------------------------------


def _const(name: str, array: NDArray[np.generic]) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facewatch-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _head_bias(per_anchor: Sequence[Sequence[float]]) -> NDArray[np.float32]:
    # A conv with A*k channels, permuted to (N, h, w, A*k) and reshaped to (N, h*w*A, k): channel
    # a*k + j is component j of anchor a, the layout SCRFD exports have.
    return np.asarray(per_anchor, np.float32).reshape(-1)


def scrfd_detector(layout: ScrfdLayout = "batched") -> onnx.ModelProto:
    """A 9-output SCRFD-like detector (input ``input.1``, dynamic height and width).

    Outputs ``score_{8,16,32}`` (A, 1), ``bbox_*`` (A, 4), ``kps_*`` (A, 10), with a leading batch
    axis unless ``layout`` is ``flat``; A = 2 * (H / stride) * (W / stride).
    """
    batch: int | str = "batch" if layout == "batched" else 1
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, "height", "width"])
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    heads: dict[str, list[onnx.ValueInfoProto]] = {"score": [], "bbox": [], "kps": []}
    for stride in STRIDES:
        cells = (640 // stride) ** 2  # flat exports declare 640x640 shapes; ORT only warns
        pooled = f"pool_{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [pooled],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        score_w = np.zeros((ANCHORS, 3, 1, 1), np.float32)
        score_w[FIRING_ANCHOR, TRIGGER_CHANNEL[stride]] = GAIN
        score_b = np.full(ANCHORS, -20.0, np.float32)
        score_b[FIRING_ANCHOR] = BIAS
        constant_heads = {
            "bbox": (4, _head_bias(BOX_DISTANCES)),
            "kps": (10, _head_bias([np.ravel(k) for k in KPS_OFFSETS])),
        }
        specs = {"score": (1, score_w, score_b)} | {
            kind: (k, np.zeros((ANCHORS * k, 3, 1, 1), np.float32), bias)
            for kind, (k, bias) in constant_heads.items()
        }
        for kind, (k, weight, bias) in specs.items():
            out = f"{kind}_{stride}"
            inits += [_const(f"{out}.w", weight), _const(f"{out}.b", bias)]
            nodes.append(
                helper.make_node("Conv", [pooled, f"{out}.w", f"{out}.b"], [f"{out}.conv"])
            )
            head = f"{out}.conv"
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [head], [f"{out}.sig"]))
                head = f"{out}.sig"
            nodes.append(helper.make_node("Transpose", [head], [f"{out}.nhwc"], perm=[0, 2, 3, 1]))
            shape = [-1, k] if layout == "flat" else [0, -1, k]
            inits.append(_const(f"{out}.shape", np.array(shape, np.int64)))
            nodes.append(helper.make_node("Reshape", [f"{out}.nhwc", f"{out}.shape"], [out]))
            dims: list[int | str] = (
                [cells * ANCHORS, k] if layout == "flat" else [batch, f"anchors_{stride}", k]
            )
            heads[kind].append(helper.make_tensor_value_info(out, TensorProto.FLOAT, dims))
    outputs = heads["score"] + heads["bbox"] + heads["kps"]
    graph = helper.make_graph(nodes, f"scrfd_{layout}", [x], outputs, initializer=inits)
    return _model(graph)


def recognizer_weights(dim: int, seed: int = 0) -> NDArray[np.float32]:
    """The (48, dim) projection of the generated recognizer."""
    return np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32)


def arcface_recognizer(dim: int = 512, *, seed: int = 0) -> onnx.ModelProto:
    """ArcFace-like: (N, 3, 112, 112) -> 4x4 average pool -> (N, 48) @ W -> (N, dim)."""
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", dim])
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc.w"], ["683"]),
    ]
    inits = [_const("fc.w", recognizer_weights(dim, seed))]
    return _model(helper.make_graph(nodes, "arcface_tiny", [x], [y], initializer=inits))


def reference_embedding(
    crops_bgr: NDArray[np.uint8], dim: int, seed: int = 0
) -> NDArray[np.float32]:
    """What the generated recognizer gives for aligned BGR crops, L2-normalised: (N, dim)."""
    rgb = (crops_bgr[..., ::-1].astype(np.float32) - 127.5) / 127.5
    pooled = rgb.reshape(-1, 4, 28, 4, 28, 3).mean(axis=(2, 4))  # (N, 4, 4, 3)
    flat = pooled.transpose(0, 3, 1, 2).reshape(len(crops_bgr), 48)  # channel-major, as ONNX
    raw = flat @ recognizer_weights(dim, seed)
    return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)


def genderage_model() -> onnx.ModelProto:
    """An irrelevant InsightFace-pack member: (1, 3, 96, 96) -> (1, 3); must be ignored."""
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])
    y = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc.w"], ["fc1"]),
    ]
    inits = [_const("fc.w", np.eye(3, dtype=np.float32))]
    return _model(helper.make_graph(nodes, "genderage_tiny", [x], [y], initializer=inits))


# --- packs on disk and as archives ------------------------------------------------------------

DETECTOR_FILE = "det_tiny.onnx"
RECOGNIZER_FILE = "w600k_tiny.onnx"
EXTRA_FILE = "genderage.onnx"


def pack_files(layout: ScrfdLayout = "batched", dim: int = 512) -> dict[str, bytes]:
    """File name -> bytes of a whole pack: detector, recognizer and an irrelevant model."""
    return {
        DETECTOR_FILE: scrfd_detector(layout).SerializeToString(),
        EXTRA_FILE: genderage_model().SerializeToString(),
        RECOGNIZER_FILE: arcface_recognizer(dim).SerializeToString(),
    }


def write_pack(folder: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def zip_members(members: Mapping[str, bytes]) -> bytes:
    """A zip archive holding ``members`` under exactly these names (``../x`` included).

    Timestamps are fixed, so the same members always give the same bytes (and SHA-256).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def zip_pack(name: str, files: Mapping[str, bytes], *, nested: bool) -> bytes:
    """``<name>.zip`` as packs are published: files at the root, or inside a ``<name>/`` folder."""
    prefix = f"{name}/" if nested else ""
    return zip_members({prefix + file: data for file, data in files.items()})
