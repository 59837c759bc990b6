"""The process a figure runs in: threads, seeds, devices and library versions.

`block4.pipeline.run_figure` resets the process before each figure (figures share a
process, one after another) and records where and with what it ran.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import platform
import sys
from pathlib import Path
from typing import Any

from block4.figures.registry import FigureContext

__all__ = [
    "FIGURE_THREADS",
    "cpu",
    "cpu_model",
    "device_name",
    "quiet_lightning",
    "reset_torch_globals",
    "run_record",
    "seed_everything",
    "single_process",
    "versions",
]


#: Intra-op CPU threads every figure runs with, whatever the machine (reproducible numbers).
def _figure_threads(text: str) -> int:
    """``BLOCK4_FIGURE_THREADS`` as a positive count; anything else stops with one line."""
    if not text.strip().isdigit() or int(text) < 1:
        # read when block4.pipeline is imported, before any command line can report it
        print(
            f"make_figures.py: error: BLOCK4_FIGURE_THREADS={text!r} is not valid; allowed: a "
            "positive integer (default 1: a figure's numbers do not depend on the core count)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return int(text)


FIGURE_THREADS = _figure_threads(os.environ.get("BLOCK4_FIGURE_THREADS", "1"))


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape a figure's numbers and files."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:  # installed packages do not change under a running process
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist, key in (
        ("torch", "torch"),
        ("pytorch-lightning", "lightning"),
        ("lightning", "lightning"),
        ("matplotlib", "matplotlib"),
        ("numpy", "numpy"),
        ("block4", "block4"),
    ):
        if key in versions:
            continue
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[key] = metadata.version(dist)
    return versions


def cpu() -> dict[str, str | None]:
    """The CPU a figure ran on: its model, and the vector instructions torch dispatches its
    kernels to (``AVX2``, ``AVX512``, ...; None while torch is not imported). Trained numbers
    can differ between CPUs that differ in these, with the same seed and one thread."""
    torch = sys.modules.get("torch")
    capability = None
    if torch is not None:
        with contextlib.suppress(Exception):
            capability = str(torch.backends.cpu.get_cpu_capability())
    return {"model": cpu_model(), "capability": capability}


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux: from ``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(ctx: FigureContext) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and ctx.accelerator in ("auto", "gpu", "cuda"):
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                name = torch.cuda.get_device_name(0)
                count = ctx.devices if ctx.devices != "auto" else torch.cuda.device_count()
                nodes = f" x {ctx.num_nodes} nodes" if ctx.num_nodes > 1 else ""
                return f"{name} x{count}{nodes}"
    if ctx.accelerator == "mps":
        return "Apple MPS"
    devices = f" x{ctx.devices}" if ctx.devices not in ("auto", 1, "1") else ""
    return f"cpu{devices}"


def single_process(ctx: FigureContext) -> bool:
    """Whether the figure runs in this process alone (no DDP ranks that compute with it)."""
    if ctx.num_nodes != 1 or os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return False
    if ctx.devices in (1, "1") or (ctx.devices == "auto" and ctx.accelerator == "cpu"):
        return True
    if ctx.devices != "auto":
        return False
    torch = sys.modules.get("torch")
    if torch is None:  # no torch, no Trainer: nothing here could start other processes
        return True
    return not (torch.cuda.is_available() and torch.cuda.device_count() > 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and (when imported) torch's random generators."""
    import random

    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def reset_torch_globals() -> None:
    """Undo process-wide settings an earlier figure may have changed (figures share a process)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    # CPU results depend on how reductions are split across threads: a fixed count makes a
    # figure's numbers independent of the core count (the models are too small to gain more;
    # another CPU may still round differently, see `cpu`).
    torch.set_num_threads(FIGURE_THREADS)


def quiet_lightning() -> None:
    """Keep Lightning's informational logs and known harmless warnings off the terminal."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*"
    )
    # A figure that trains on the training set only (a fixed number of epochs, no early
    # stopping) fits a module that can validate without a validation set: on purpose.
    warnings.filterwarnings(
        "ignore", message=r"You defined a `validation_step` but have no `val_dataloader`.*"
    )


def run_record(ctx: FigureContext, seconds: float) -> dict[str, Any]:
    """Where and with what a figure ran, for its manifest entry: device, CPU threads and
    model (see `cpu`), the Trainer's settings, library versions, its wall time and the date
    (UTC)."""
    return {
        "device": device_name(ctx),
        "cpu_threads": FIGURE_THREADS,
        "cpu": cpu(),
        "trainer": {
            "accelerator": ctx.accelerator,
            "devices": ctx.devices,
            "num_nodes": ctx.num_nodes,
            "strategy": ctx.strategy,
        },
        "versions": versions(),
        "wall_time_s": round(seconds, 2),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
