"""The freshness contract of the figures: fingerprints, the manifest, status, one figure run.

Every figure of the site is a function marked with :func:`block4.figures.registry.figure`.
:func:`discover` finds them by *reading* the figure modules (so listing and checking never
import torch or Lightning), :func:`fingerprint` hashes what each depends on, and
:func:`run_figure` makes one figure and records it in ``docs/figures/manifest.json``. The
command line that runs many figures (``python scripts/make_figures.py``) is
:mod:`block4.make_figures`.

Fingerprint:
    sha256 over the pipeline's format version, the figure's name, function, parameters,
    profile and seed, and the code of every source it depends on (Python files as their
    syntax tree without docstrings, so comments, docstrings and formatting do not count;
    data files by their bytes): its own module, every
    ``block4`` module that module imports (transitively, including imports inside
    functions and ``"block4.x"`` strings), the plot style module, and package data
    files named by a string literal in one of those modules (e.g. ``"blood_pressure.csv"``).

Freshness:
    a figure is *fresh* when its manifest entry's fingerprint equals the fingerprint
    recomputed with the profile and seed **recorded in that entry** (committed figures may
    come from a ``full`` run on a GPU) and its output files exist unchanged. Otherwise it is
    *stale* (sources, parameters or files changed) or *missing* (never made, or a file is
    gone). An entry whose function no longer exists is an *orphan*.

Safety:
    every file and the manifest are written to a temporary file and renamed into place; the
    manifest is re-read and updated under a file lock after each figure, so a failing or
    interrupted figure leaves the previous files and entry as they were, and several
    processes may run the pipeline at once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import io
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from block4.figures.registry import PROFILES, FigureContext, figure_mark
from block4.pipeline_sources import (
    STYLE_MODULE,
    FigureInfo,
    PipelineError,
    Project,
    Sources,
    code_signature,
    discover,
)

__all__ = [
    "COMMAND",
    "FIGURE_THREADS",
    "FORMAT_VERSION",
    "PROFILE_RANK",
    "STOP_SIGNALS",
    "FigureInfo",
    "FigureStatus",
    "PipelineError",
    "Project",
    "Sources",
    "atomic_write",
    "code_signature",
    "dependencies",
    "discover",
    "figure_status",
    "fingerprint",
    "holding_stop_signals",
    "load_figure",
    "load_manifest",
    "manifest_lock",
    "prune_orphans",
    "refresh_command",
    "render",
    "run_figure",
    "stale_figures",
    "update_manifest",
    "validate_numbers",
]

#: Bumped when the fingerprint recipe or the manifest layout changes (makes every figure stale).
FORMAT_VERSION = 3  # 3: Python sources hashed as code (docstrings, comments, layout ignored)

#: Intra-op CPU threads every figure runs with, whatever the machine (reproducible numbers).
FIGURE_THREADS = int(os.environ.get("BLOCK4_FIGURE_THREADS", "1"))

#: Profiles from worst to best; a run asked for a better profile than an entry was made
#: with re-makes that figure (``full`` is never replaced by ``quick`` unless forced).
PROFILE_RANK = {name: rank for rank, name in enumerate(PROFILES)}

#: The command that (re)makes figures, as shown in messages.
COMMAND = "python scripts/make_figures.py"

#: Keys of the numbers dict: they appear in prose as ``{{ figure.key }}``.
NUMBER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


def dependencies(
    project: Project, info: FigureInfo, *, sources: Sources | None = None
) -> dict[str, str]:
    """The source files ``info`` depends on (relative to ``src``) with their sha256."""
    sources = sources or Sources(project)
    return {rel: sources.digest(project.src / rel) for rel in sources.closure(info.module)}


def fingerprint(
    project: Project,
    info: FigureInfo,
    profile: str,
    seed: int,
    *,
    sources: Sources | None = None,
) -> str:
    """The figure's fingerprint for ``profile`` and ``seed`` (a sha256 hex digest)."""
    deps = dependencies(project, info, sources=sources)
    return _fingerprint_of(info, profile, seed, deps)


def _fingerprint_of(info: FigureInfo, profile: str, seed: int, deps: dict[str, str]) -> str:
    header = {
        "format": FORMAT_VERSION,
        "name": info.name,
        "function": info.function,
        "module": info.module,
        "params": info.params,
        "profile": profile,
        "seed": seed,
    }
    h = hashlib.sha256(json.dumps(header, sort_keys=True, default=repr).encode())
    for rel, digest in sorted(deps.items()):
        h.update(f"\n{rel}\0{digest}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "figures": {}}


def load_manifest(project: Project) -> dict[str, Any]:
    """Read ``manifest.json`` (an empty manifest if there is none)."""
    try:
        text = project.manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty_manifest()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PipelineError(
            f"{project.relative(project.manifest_path)} is not valid JSON ({err}); after a "
            "git merge conflict, take either side (git checkout --theirs/--ours) and run "
            f"{COMMAND} to re-make what is stale"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("figures"), dict):
        raise PipelineError(f"{project.relative(project.manifest_path)} has no 'figures' table")
    return data


def _dump_manifest(manifest: dict[str, Any]) -> bytes:
    manifest = dict(manifest)
    manifest["format"] = FORMAT_VERSION
    manifest["figures"] = dict(sorted(manifest["figures"].items()))
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: The signals that stop a run (and are held while a figure's files and entry are written).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def holding_stop_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then deliver the first one.

    A figure's two files and its manifest entry are written inside one such block, so a stop
    signal lands before or after all three, never between them. (SIGKILL cannot be held: a
    figure whose files changed while its entry did not is then reported stale by their
    digests, and the next run re-makes it.) Outside the main thread this holds nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _: held.append(signum)) for sig in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if held:
            signal.raise_signal(held[0])


@contextlib.contextmanager
def manifest_lock(project: Project) -> Iterator[None]:
    """Hold an exclusive lock on the manifest (several pipelines may run at once)."""
    project.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    with open(project.lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def update_manifest(project: Project, name: str, entry: dict[str, Any] | None) -> None:
    """Set (or, with ``entry=None``, remove) one figure's entry, under the lock."""
    with manifest_lock(project):
        manifest = load_manifest(project)
        if entry is None:
            manifest["figures"].pop(name, None)
        else:
            manifest["figures"][name] = entry
        atomic_write(project.manifest_path, _dump_manifest(manifest))


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


@dataclass
class FigureStatus:
    """The state of one figure: ``fresh``, ``stale``, ``missing`` or ``orphan``.

    Attributes:
        name: the figure's name.
        state: ``fresh`` (matches its code), ``stale`` (code, parameters or files changed),
            ``missing`` (never made, or a file is gone), ``orphan`` (an entry in the manifest
            whose function no longer exists).
        reason: a short human explanation (empty when fresh).
        info: the declaration (None for an orphan).
        entry: the manifest entry (None when never made).
    """

    name: str
    state: str
    reason: str = ""
    info: FigureInfo | None = None
    entry: dict[str, Any] | None = None

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def figure_status(
    project: Project,
    *,
    figures: dict[str, FigureInfo] | None = None,
    manifest: dict[str, Any] | None = None,
    sources: Sources | None = None,
) -> dict[str, FigureStatus]:
    """The status of every declared figure (and of orphaned manifest entries)."""
    sources = sources or Sources(project)
    figures = discover(project, sources=sources) if figures is None else figures
    manifest = load_manifest(project) if manifest is None else manifest
    entries: dict[str, Any] = manifest["figures"]
    result: dict[str, FigureStatus] = {}
    for name, info in figures.items():
        entry = entries.get(name)
        if entry is None:
            result[name] = FigureStatus(name, "missing", "never made", info, None)
            continue
        missing = [f for f in entry.get("files", {}).values() if not (project.out_dir / f).exists()]
        if missing or not entry.get("files"):
            result[name] = FigureStatus(
                name, "missing", f"file {', '.join(missing) or '?'} is missing", info, entry
            )
            continue
        deps = dependencies(project, info, sources=sources)
        fp = _fingerprint_of(info, entry.get("profile", ""), entry.get("seed", 0), deps)
        if fp != entry.get("fingerprint"):
            result[name] = FigureStatus(name, "stale", _why_stale(info, entry, deps), info, entry)
            continue
        changed = [
            f
            for f, digest in entry.get("sha256", {}).items()
            if _file_digest(project.out_dir / f) != digest
        ]
        if changed:
            reason = f"{', '.join(changed)} changed outside the pipeline"
            result[name] = FigureStatus(name, "stale", reason, info, entry)
            continue
        result[name] = FigureStatus(name, "fresh", "", info, entry)
    for name, entry in entries.items():
        if name not in figures:
            result[name] = FigureStatus(
                name, "orphan", "no @figure function of this name any more", None, entry
            )
    return result


def _why_stale(info: FigureInfo, entry: dict[str, Any], deps: dict[str, str]) -> str:
    recorded: dict[str, str] = entry.get("sources", {})
    changed = sorted(rel for rel, d in deps.items() if recorded.get(rel, "")[:16] != d[:16])
    gone = sorted(set(recorded) - set(deps))
    parts = []
    if changed:
        parts.append("changed: " + ", ".join(changed))
    if gone:
        parts.append("no longer used: " + ", ".join(gone))
    if entry.get("params") != info.params:
        parts.append("parameters changed")
    if entry.get("function") not in (None, info.function) or entry.get("module") not in (
        None,
        info.module,
    ):
        parts.append("moved")
    return "; ".join(parts) or "fingerprint changed"


def stale_figures(project: Project, names: Iterable[str] | None = None) -> list[FigureStatus]:
    """The figures (of ``names``, default all) that are not fresh, orphans included."""
    status = figure_status(project)
    wanted = set(names) if names is not None else None
    return [s for n, s in status.items() if not s.fresh and (wanted is None or n in wanted)]


def refresh_command(names: Iterable[str], profile: str | None = None) -> str:
    """The command that re-makes ``names``."""
    cmd = f"{COMMAND} --only {' '.join(sorted(names))}"
    if profile:
        cmd += f" --profile {profile}"
    return cmd


# --------------------------------------------------------------------------------------------
# Making one figure
# --------------------------------------------------------------------------------------------


def validate_numbers(name: str, numbers: Any) -> dict[str, bool | int | float | str]:
    """Check that a figure's numbers are a flat dict of JSON values; return a plain copy."""
    if not isinstance(numbers, dict):
        raise PipelineError(
            f"figure {name!r} must return (Figure, dict of numbers); "
            f"the second item is a {type(numbers).__name__}"
        )
    clean: dict[str, bool | int | float | str] = {}
    for key, value in numbers.items():
        if not isinstance(key, str) or not NUMBER_KEY.match(key):
            raise PipelineError(
                f"figure {name!r}: number key {key!r} must be an identifier "
                "(letters, digits, underscores) so prose can quote it as {{ figure.key }}"
            )
        if isinstance(value, bool):
            clean[key] = value
        elif isinstance(value, int):
            clean[key] = int(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise PipelineError(
                    f"figure {name!r}: numbers[{key!r}] is {value}; JSON has no NaN/inf "
                    "(return a string such as 'diverged' instead)"
                )
            clean[key] = float(value)
        elif isinstance(value, str):
            clean[key] = value
        else:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            raise PipelineError(
                f"figure {name!r}: numbers[{key!r}] is a {kind}; allowed are float, int, str "
                "and bool (convert tensors and numpy scalars with float(...) or int(...))"
            )
    return clean


def _versions() -> dict[str, str]:
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


def _device(ctx: FigureContext) -> str:
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


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _reset_torch_globals() -> None:
    """Undo process-wide settings an earlier figure may have changed (figures share a process)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    # CPU results depend on how reductions are split across threads: a fixed count makes a
    # figure's numbers the same on every machine (the models here are too small to gain more).
    torch.set_num_threads(FIGURE_THREADS)


def _quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*"
    )


def render(fig: Any) -> tuple[bytes, bytes]:
    """The light and the dark SVG of ``fig`` (deterministic bytes for the same figure)."""
    style = importlib.import_module(STYLE_MODULE)
    with style.context():
        light = io.BytesIO()
        fig.savefig(light, format="svg", metadata={"Date": None}, facecolor="white")
        style.dark_variant(fig)
        dark = io.BytesIO()
        fig.savefig(dark, format="svg", metadata={"Date": None}, transparent=True)
    return light.getvalue(), dark.getvalue()


def load_figure(info: FigureInfo) -> Callable[..., Any]:
    """Import the module of a discovered figure and return its function.

    Call it as ``load_figure(info)(ctx, **info.params)`` to run a figure outside the pipeline
    (as tests and notebooks do).

    Raises:
        PipelineError: the function is gone or is not marked as this figure (the source
            changed since it was discovered).
    """
    module = importlib.import_module(info.module)
    func = getattr(module, info.function, None)
    if func is None:
        raise PipelineError(f"{info.module} has no function {info.function!r}")
    mark = figure_mark(func)
    if mark is None or mark.name != info.name:
        raise PipelineError(
            f"{info.module}.{info.function} is not marked @figure({info.name!r}); "
            "run the pipeline again (the source changed since it was read)"
        )
    return func


def _call_figure(info: FigureInfo, ctx: FigureContext) -> tuple[Any, dict[str, Any], float]:
    """Import the figure's module and run it: ``(Figure, checked numbers, seconds)``."""
    import matplotlib

    matplotlib.use("Agg")  # figures go to files: no window, on any platform
    func = load_figure(info)
    _quiet_lightning()  # Lightning sets its loggers' levels when it is first imported
    style = importlib.import_module(STYLE_MODULE)
    _reset_torch_globals()
    _seed_everything(ctx.seed)
    start = time.perf_counter()
    with style.context():
        result = func(ctx, **info.params)
    wall = time.perf_counter() - start
    from matplotlib.figure import Figure

    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise PipelineError(f"figure {info.name!r} must return (Figure, dict of numbers)")
    fig, numbers = result
    if not isinstance(fig, Figure):
        import matplotlib.pyplot as plt

        plt.close("all")
        raise PipelineError(
            f"figure {info.name!r} must return a matplotlib Figure first, got {type(fig).__name__}"
        )
    try:
        return fig, validate_numbers(info.name, numbers), wall
    except PipelineError:
        import matplotlib.pyplot as plt

        plt.close(fig)
        raise


def run_figure(
    project: Project,
    info: FigureInfo,
    ctx: FigureContext,
    *,
    write: bool = True,
    sources: Sources | None = None,
) -> dict[str, Any]:
    """Make one figure: import its module, run it, write both SVGs and its manifest entry.

    Nothing is written unless the function returns a valid result; the files and the entry
    are replaced atomically, one after the other. ``write=False`` makes and checks the
    figure without writing anything.

    Returns:
        The new manifest entry.
    """
    sources = sources or Sources(project)
    deps = dependencies(project, info, sources=sources)  # the sources as they are now
    fp = _fingerprint_of(info, ctx.profile, ctx.seed, deps)
    fig, numbers, wall = _call_figure(info, ctx)
    import matplotlib.pyplot as plt

    try:
        light, dark = render(fig)
    finally:
        plt.close(fig)
    files = {"light": f"{info.name}.svg", "dark": f"{info.name}.dark.svg"}
    entry = {
        "chapter": info.chapter,
        "module": info.module,
        "function": info.function,
        "source": project.relative(info.path),
        "line": info.line,
        "params": info.params,
        "profile": ctx.profile,
        "seed": ctx.seed,
        "fingerprint": fp,
        "sources": {rel: d[:16] for rel, d in deps.items()},
        "device": _device(ctx),
        "cpu_threads": FIGURE_THREADS,
        "trainer": {
            "accelerator": ctx.accelerator,
            "devices": ctx.devices,
            "num_nodes": ctx.num_nodes,
            "strategy": ctx.strategy,
        },
        "versions": _versions(),
        "wall_time_s": round(wall, 2),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "numbers": numbers,
        "files": files,
        "bytes": {"light": len(light), "dark": len(dark)},
        "sha256": {
            files["light"]: hashlib.sha256(light).hexdigest(),
            files["dark"]: hashlib.sha256(dark).hexdigest(),
        },
    }
    if write:
        with holding_stop_signals():  # a stop signal lands before or after all three writes
            atomic_write(project.out_dir / files["light"], light)
            atomic_write(project.out_dir / files["dark"], dark)
            update_manifest(project, info.name, entry)
    return entry


def prune_orphans(project: Project, names: Iterable[str]) -> None:
    """Remove the files and manifest entries of figures whose function no longer exists."""
    with holding_stop_signals(), manifest_lock(project):
        manifest = load_manifest(project)
        for name in names:
            entry = manifest["figures"].pop(name, None) or {}
            for f in entry.get("files", {}).values():
                with contextlib.suppress(FileNotFoundError):
                    (project.out_dir / f).unlink()
        atomic_write(project.manifest_path, _dump_manifest(manifest))
