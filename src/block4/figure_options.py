"""The values of the ``make_figures.py`` command line, checked before anything runs.

Each ``parse_*`` function turns one option's text into what Lightning's ``Trainer`` takes, or
raises `UsageError` with one sentence saying what is allowed.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from block4.figure_env import FIGURE_THREADS
from block4.figure_runs import external_world_size
from block4.pipeline_sources import PipelineError

__all__ = [
    "ACCELERATORS",
    "MAX_SEED",
    "STRATEGIES",
    "UsageError",
    "available_cpus",
    "check_accelerator",
    "check_jobs",
    "check_out_dir",
    "parse_devices",
    "parse_jobs",
    "parse_num_nodes",
]

#: ``--accelerator`` values (those Lightning's ``Trainer`` accepts).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

#: ``--strategy`` values offered by the command line (Lightning accepts these names).
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "deepspeed",
    "single_device",
)


class UsageError(PipelineError):
    """A bad command-line input: unknown figure, profile or device specification."""


#: Seeds a run accepts: figures add small offsets, and torch, NumPy and Python must all take it.
MAX_SEED = 2**31


def check_out_dir(out_dir: Path, *, make: bool) -> None:
    """A directory the run can write into (created if missing), checked before any figure."""
    blocked = [p for p in (out_dir, *out_dir.resolve().parents) if p.is_file()]
    if blocked:
        raise UsageError(
            f"--out-dir {out_dir}: {blocked[0]} is a file; allowed: a directory "
            "(created if missing)"
        )
    if not make:
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".block4-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(
            f"--out-dir {out_dir} cannot be written ({err.strerror}); allowed: a directory "
            "you can write to"
        ) from None


def parse_devices(text: str) -> int | str:
    """Validate a ``--devices`` value; return what Lightning's ``Trainer`` takes."""
    text = str(text).strip()
    if text == "auto":
        return "auto"
    if re.fullmatch(r"-1|[1-9][0-9]*", text):
        return int(text)
    if re.fullmatch(r"[0-9]+(,[0-9]+)+,?|[0-9]+,", text):
        return text  # explicit device indices, e.g. "0,1"
    raise UsageError(
        f"--devices {text!r} is not valid; allowed: auto, a positive count (e.g. 2), "
        "-1 for all devices, or device indices like 0,1"
    )


def parse_num_nodes(text: str) -> int:
    """``--num-nodes``: a positive integer, as Lightning's ``Trainer(num_nodes=...)`` takes."""
    if not re.fullmatch(r"[1-9][0-9]*", str(text).strip()):
        raise UsageError(f"--num-nodes {text!r} is not valid; allowed: a positive integer")
    return int(text)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_jobs(text: str) -> int:
    """Validate a ``--jobs`` value: a positive count, or ``auto`` (one per CPU core)."""
    text = str(text).strip()
    if text == "auto":
        return max(1, available_cpus() // FIGURE_THREADS)
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise UsageError(
            f"--jobs {text!r} is not valid; allowed: a positive count (e.g. 4) or auto "
            f"(one per CPU core: {max(1, available_cpus() // FIGURE_THREADS)} here)"
        )
    return int(text)


def check_jobs(jobs: int, devices: int | str, num_nodes: int, strategy: str) -> None:
    """Parallel figure processes and a multi-process Trainer do not mix."""
    if jobs == 1:
        return
    several = devices != 1 and devices != "auto"  # a count > 1, -1 (all) or device indices
    if several or num_nodes > 1 or strategy not in ("auto", "single_device"):
        raise UsageError(
            f"--jobs {jobs} runs figures in separate processes, one device each; it cannot be "
            "combined with a multi-process Trainer (--devices other than 1, --num-nodes > 1, "
            f"--strategy {strategy}); allowed: --jobs 1 with those, or --jobs N with "
            "--devices 1"
        )
    if external_world_size() > 1:
        raise UsageError(
            f"--jobs {jobs} under a cluster launcher ({external_world_size()} ranks); allowed "
            "there: --jobs 1"
        )


def check_accelerator(accelerator: str, devices: int | str) -> None:
    """Fail early (before anything is written) when the asked-for device is not there."""
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UsageError(
            f"--accelerator {accelerator} but no CUDA GPU is available here; "
            "allowed on this machine: --accelerator auto or cpu"
        )
    if isinstance(devices, int) and devices > count:
        raise UsageError(
            f"--devices {devices} but only {count} GPU(s) are available; allowed: 1..{count}, "
            "-1 or auto"
        )
