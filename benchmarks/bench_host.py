"""What every benchmark script shares: progress lines, the face data folder, the host's facts.

The scripts run as ``python benchmarks/<name>.py``, so this module is importable by its name.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FACES_ENV = "FACEWATCH_TEST_FACES"


def progress(message: str) -> None:
    """A progress line on stderr: stdout carries only the JSON figures."""
    print(message, file=sys.stderr, flush=True)


def faces_root(explicit: Path | None) -> Path:
    """--faces-dir, else $FACEWATCH_TEST_FACES, else the repository's ../shared/data/faces."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(FACES_ENV) or REPO.parent / "shared" / "data" / "faces")


def load_average() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return ()


def host(load_before: tuple[float, ...] | None = None) -> dict[str, Any]:
    """CPU model and counts, Python, and the load average before and now when ``load_before``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": model,
    }
    if load_before is not None:
        facts["load_average"] = {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_average()],
        }
    facts["python"] = platform.python_version()
    return facts
