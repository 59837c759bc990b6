"""Helpers shared by the benchmark scripts: machine description and result files.

Every benchmark writes one JSON file to ``benchmarks/results/`` with the same envelope::

    {"benchmark": NAME, "date": ISO-8601, "machine": {...}, "results": {...}}

``docs/performance.md`` renders these files when the site is built.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from block4.figure_env import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, core count, GPU (if any) and library versions of this machine."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "torch": _version("torch"),
        "pytorch_lightning": _version("pytorch-lightning"),
        "mkdocs_material": _version("mkdocs-material"),
        "gpu": None,
    }
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def write_result(
    name: str,
    results: dict[str, Any],
    out_dir: Path | None = None,
    filename: str | None = None,
    machine_extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``results`` for benchmark ``name`` atomically; return the file's path.

    The file is ``<out_dir>/<name>.json`` unless ``filename`` names another;
    ``machine_extra`` adds to (and overrides) the machine description.
    """
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "machine": {**machine_info(), **(machine_extra or {})},
        "results": results,
    }
    target = out_dir / (filename or f"{name}.json")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, target)
    return target


def python() -> str:
    """The interpreter running the benchmark (so subprocesses use the same venv)."""
    return sys.executable
