"""ONNX Runtime sessions: execution providers asked for vs. actually used, and the GPU pitfall.

The CPU wheel ``onnxruntime`` and the GPU wheel ``onnxruntime-gpu`` install the same Python module;
when both are present (packages that depend on ``onnxruntime`` pull the CPU one in), whichever was
installed last wins and CUDA silently disappears. So providers are judged from
``session.get_providers()``, the ones the session really runs on, never from the available list.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from facewatch.errors import ModelLoadError, ProviderFallbackError
from facewatch.recognizer.convert import one_line

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_ORT_NAMES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}
GPU_PROVIDERS = frozenset({CUDA, TENSORRT})
CPU_FALLBACK_HINT = "To start on the CPU anyway, set FACE_AI_ALLOW_CPU_FALLBACK=true."


def onnxruntime_distributions() -> dict[str, str]:
    """Installed ONNX Runtime wheels by distribution name -> version."""
    found = {}
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def gpu_install_hint() -> str:
    """What to do when the GPU is not used, judged from the installed wheels."""
    dists = onnxruntime_distributions()
    if "onnxruntime" in dists and "onnxruntime-gpu" in dists:
        return (
            "Both onnxruntime (CPU) and onnxruntime-gpu are installed and the CPU build shadows "
            "the GPU one; fix with: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install 'onnxruntime-gpu[cuda,cudnn]' (or: bash scripts/setup --gpu)."
        )
    if "onnxruntime-gpu" not in dists:
        return (
            "The installed ONNX Runtime is the CPU build; install with: bash scripts/setup --gpu."
        )
    return (
        "onnxruntime-gpu is installed but CUDA could not be loaded: check the NVIDIA driver and "
        "that the CUDA/cuDNN libraries match (pip install 'onnxruntime-gpu[cuda,cudnn]')."
    )


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """Turn settings names (auto, cuda, tensorrt, cpu) into ORT provider names, CPU last.

    ``auto`` means: CUDA when this ONNX Runtime build offers it, else CPU.
    """
    available = set(ort.get_available_providers())
    names: list[str] = []
    for item in requested:
        if item == "auto":
            names.extend(p for p in (CUDA,) if p in available)
        else:
            names.append(_ORT_NAMES[item])
    if CPU not in names:
        names.append(CPU)
    return list(dict.fromkeys(names))


def wants_gpu(requested: Sequence[str]) -> bool:
    """Whether the settings explicitly ask for a GPU provider (``auto`` does not)."""
    return any(_ORT_NAMES.get(item) in GPU_PROVIDERS for item in requested)


def open_session(
    path: Path,
    requested: Sequence[str],
    *,
    allow_cpu_fallback: bool = False,
    intra_op_threads: int = 0,
    cpu_memory_arena: bool = True,
) -> ort.InferenceSession:
    """Open ``path`` on the requested providers and check the ones it really uses.

    Raises:
        ModelLoadError: the file is missing or not a model ONNX Runtime can load.
        ProviderFallbackError: a GPU provider was asked for explicitly, the session runs on the
            CPU only, and ``allow_cpu_fallback`` is off.
    """
    providers = resolve_providers(requested)
    available = set(ort.get_available_providers())
    missing = [p for p in providers if p not in available]
    if missing:
        if wants_gpu(requested) and not allow_cpu_fallback:
            raise ProviderFallbackError(
                providers,
                [p for p in providers if p in available],
                f"{gpu_install_hint()} {CPU_FALLBACK_HINT}",
            )
        log.warning(
            "providers %s are not in this ONNX Runtime build; using %s",
            missing,
            [p for p in providers if p in available],
        )
        providers = [p for p in providers if p in available]
    if any(p in GPU_PROVIDERS for p in providers) and hasattr(ort, "preload_dlls"):
        try:  # loads CUDA/cuDNN from the nvidia-* wheels when they are installed
            ort.preload_dlls()
        except Exception as exc:  # best effort: the session reports what it got below
            log.debug("preload_dlls failed: %s", exc)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    # The arena never gives memory back: it stays sized for the largest batch seen.
    options.enable_cpu_mem_arena = cpu_memory_arena
    provider_options: list[tuple[str, dict[str, Any]]] = [(p, {}) for p in providers]
    try:
        session = ort.InferenceSession(
            str(path),
            options,
            providers=provider_options,
            # ONNX Runtime retries a session that fails to build on the CPU, announcing it with
            # print() on stdout (which carries the commands' JSON): pointless on the CPU alone.
            enable_fallback=int(any(p in GPU_PROVIDERS for p in providers)),
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
        raise ModelLoadError(
            f"ONNX Runtime cannot load the model ({one_line(exc)}); the file is damaged, "
            "truncated or not a model this ONNX Runtime can run: replace it",
            path=str(path),
        ) from exc
    actual = session.get_providers()
    asked_gpu = [p for p in providers if p in GPU_PROVIDERS]
    if wants_gpu(requested) and not any(p in actual for p in asked_gpu):
        if not allow_cpu_fallback:
            raise ProviderFallbackError(
                providers, actual, f"{gpu_install_hint()} {CPU_FALLBACK_HINT}"
            )
        log.warning("%s runs on %s instead of %s (fallback allowed)", path.name, actual, providers)
    return session


def check_input(
    session: ort.InferenceSession,
    size: tuple[int, int] | None,
    *,
    role: str,
    path: str,
) -> None:
    """Refuse a model whose input is not the (N, 3, H, W) image blob facewatch feeds.

    Args:
        size: the (width, height) the model must take, or None when any size is fed.

    Raises:
        ModelLoadError: naming the file, the input it takes and what is fed instead.
    """
    inputs = session.get_inputs()
    fed = f"(N, 3, {size[1]}, {size[0]})" if size else "(N, 3, H, W)"
    if len(inputs) != 1 or not _takes(list(inputs[0].shape), size):
        shown = ", ".join(str(i.shape) for i in inputs) or "no input"
        raise ModelLoadError(
            f"the {role} takes {shown}, but facewatch feeds {fed} images: this is not a {role} "
            f"it can use; choose another with --{role} / FACE_AI_{role.upper()}",
            path=path,
        )


def _takes(shape: list[int | str | None], size: tuple[int, int] | None) -> bool:
    """Whether an input of ``shape`` (ints fixed, str/None symbolic) takes (N, 3, H, W)."""
    if len(shape) != 4:
        return False
    wanted: list[int | None] = [None, 3, *(size[::-1] if size else (None, None))]
    return all(
        not isinstance(dim, int) or want is None or dim == want
        for dim, want in zip(shape, wanted, strict=True)
    )
