"""The freshness contract of the figures: fingerprints, the manifest, status, one figure run.

Every figure of the site is a function marked with `block4.figures.registry.figure`.
`discover` finds them by *reading* the figure modules (so listing and checking never
import torch or Lightning), `fingerprint` hashes what each depends on, and
`run_figure` makes one figure and records it in ``docs/figures/manifest.json``. The
command line that runs many figures (``python scripts/make_figures.py``) is
`block4.make_figures`.

Fingerprint:
    sha256 over the pipeline's format version, the figure's name, function, parameters,
    profile and seed, and the code it depends on, **function by function**: the figure's own
    function and the functions, classes (with their methods) and constants of ``block4`` it
    uses, transitively, by name (`block4.code_closure`), the top-level code of the
    modules they live in, the figure context and the plot style module. Code counts as its
    syntax tree without docstrings, so comments, docstrings and formatting do not count.
    Where a name cannot be resolved statically (``getattr(module, name)``, a star import,
    ``globals()``, a ``"block4.x"`` string) the whole module counts. Package data files
    named by a string literal in that code (e.g. ``"blood_pressure.csv"``) count by their
    bytes. Editing one figure function makes that figure stale, not its neighbours;
    editing a shared helper makes exactly the figures that use it stale.

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
import dataclasses
import hashlib
import importlib
import inspect
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from block4.figure_env import (
    FIGURE_THREADS,
    device_name,
    quiet_lightning,
    reset_torch_globals,
    run_record,
    seed_everything,
    single_process,
)
from block4.figure_output import render, validate_numbers
from block4.figures.registry import PROFILES, FigureContext, figure_mark
from block4.pipeline_sources import (
    STYLE_MODULE,
    FigureInfo,
    PipelineError,
    Project,
    Sources,
    atomic_write,
    code_signature,
    discover,
)
from block4.stop_signals import STOP_SIGNALS, holding_stop_signals

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
    "entry_problem",
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

FORMAT_VERSION = 4  # 4: fingerprints per function (3: per module; 2: module bytes)
"""Bumped when the fingerprint recipe or the manifest layout changes (makes every figure stale)."""

PROFILE_RANK = {name: rank for rank, name in enumerate(PROFILES)}
"""Profiles from worst to best; a run asked for a better profile than an entry was made
with re-makes that figure (``full`` is never replaced by ``quick`` unless forced)."""

#: The command that (re)makes figures, as shown in messages.
COMMAND = "python scripts/make_figures.py"


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


def dependencies(
    project: Project, info: FigureInfo, *, sources: Sources | None = None
) -> dict[str, str]:
    """The code ``info`` depends on, with the sha256 of each piece.

    Keys are ``"module:name"`` for a function, class or constant of the package (the
    figure's own function among them), ``"module:<top level>"`` for a module's other
    top-level code, ``"module:*"`` for a whole module (where a name cannot be resolved
    statically), and a path relative to ``src`` for a data file.
    """
    sources = sources or Sources(project)
    return sources.figure_closure(info.module, info.function)


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
    where = project.relative(project.manifest_path)
    try:
        text = project.manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty_manifest()
    except IsADirectoryError:
        raise PipelineError(f"{where} is a directory; allowed: the JSON manifest file") from None
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{where} is not UTF-8 text ({err.reason} at byte {err.start}); restore it with "
            f"git checkout -- {where}, or delete it and run {COMMAND} to re-make every figure"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PipelineError(
            f"{project.relative(project.manifest_path)} is not valid JSON ({err}); after a "
            "git merge conflict, take either side (git checkout --theirs/--ours) and run "
            f"{COMMAND} to re-make what is stale"
        ) from None
    if (
        isinstance(data, dict)
        and isinstance(data.get("format"), int)
        and (data["format"] > FORMAT_VERSION)
    ):
        raise PipelineError(
            f"{where} has format {data['format']}, newer than this block4 reads "
            f"({FORMAT_VERSION}); update block4, or delete {where} and run {COMMAND}"
        )
    if not isinstance(data, dict) or not isinstance(data.get("figures"), dict):
        raise PipelineError(f"{project.relative(project.manifest_path)} has no 'figures' table")
    return data


def _dump_manifest(manifest: dict[str, Any]) -> bytes:
    manifest = dict(manifest)
    manifest["format"] = FORMAT_VERSION
    manifest["figures"] = dict(sorted(manifest["figures"].items()))
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


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


#: What a manifest entry must hold, by key, and the types allowed.
_ENTRY_SHAPE: dict[str, tuple[type, ...]] = {
    "profile": (str,),
    "seed": (int,),
    "fingerprint": (str,),
    "sources": (dict,),
    "files": (dict,),
    "numbers": (dict,),
}


def entry_problem(entry: Any) -> str:
    """Why a manifest entry cannot be used (empty when it can): a damaged entry (a merge
    gone wrong, a hand edit). Such a figure counts as stale and is shown as never made, so
    the next run (or `refresh_command`) re-makes it and writes a valid entry."""
    if not isinstance(entry, dict):
        return f"its manifest entry is a {type(entry).__name__}, not a table"
    bad = [
        key
        for key, types in _ENTRY_SHAPE.items()
        if not isinstance(entry.get(key), types) or isinstance(entry.get(key), bool)
    ]
    files = entry["files"] if "files" not in bad else {}
    if "files" not in bad and sorted(files) != ["dark", "light"]:
        bad.append("files")
    if bad:
        return f"its manifest entry is damaged ({', '.join(bad)} missing or of the wrong type)"
    if entry["profile"] not in PROFILE_RANK:
        return f"its manifest entry names an unknown profile {entry['profile']!r}"
    return ""


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
        problem = entry_problem(entry)
        if problem:  # shown as never made; a run re-makes it
            result[name] = FigureStatus(name, "stale", problem, info, None)
            continue
        missing = [f for f in entry.get("files", {}).values() if not (project.out_dir / f).exists()]
        if missing or not entry.get("files"):
            result[name] = FigureStatus(
                name, "missing", f"file {', '.join(missing) or '?'} is missing", info, entry
            )
            continue
        deps = dependencies(project, info, sources=sources)
        fp = _fingerprint_of(info, entry.get("profile", ""), entry.get("seed", 0), deps)
        if fp != entry.get("fingerprint") or entry.get("format") != FORMAT_VERSION:
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
    sources.save_index()
    for name, entry in entries.items():
        if name not in figures:
            result[name] = FigureStatus(
                name, "orphan", "no @figure function of this name any more", None, entry
            )
    return result


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _why_stale(info: FigureInfo, entry: dict[str, Any], deps: dict[str, str]) -> str:
    """Which code changed (function by function), or what else made the figure stale."""
    made = entry.get("format", "3 or older")
    if made != FORMAT_VERSION:
        newer = isinstance(made, int) and made > FORMAT_VERSION
        which = "a newer pipeline: update this checkout" if newer else "an older pipeline"
        return f"made by {which} (format {made}, now {FORMAT_VERSION})"
    recorded: dict[str, str] = entry.get("sources", {})
    changed = sorted(k for k, d in deps.items() if k in recorded and recorded[k] != d[:16])
    added = sorted(set(deps) - set(recorded))
    gone = sorted(set(recorded) - set(deps))
    parts = []
    if changed:
        parts.append("changed: " + _names(changed))
    if added:
        parts.append("now uses: " + _names(added))
    if gone:
        parts.append("no longer uses: " + _names(gone))
    if entry.get("params") != info.params:
        parts.append("parameters changed")
    if (entry.get("function"), entry.get("module")) != (info.function, info.module):
        parts.append("moved")
    return "; ".join(parts) or "fingerprint changed"


def stale_figures(project: Project, names: Iterable[str] | None = None) -> list[FigureStatus]:
    """The figures (of ``names``, default all) that are not fresh, orphans included."""
    status = figure_status(project)
    wanted = set(names) if names is not None else None
    return [s for n, s in status.items() if not s.fresh and (wanted is None or n in wanted)]


def refresh_command(
    names: Iterable[str], profile: str | None = None, seed: int | None = None
) -> str:
    """The command that re-makes ``names`` (with ``profile`` and ``seed`` when given)."""
    cmd = f"{COMMAND} --only {' '.join(sorted(names))}"
    if profile:
        cmd += f" --profile {profile}"
    if seed is not None:
        cmd += f" --seed {seed}"
    return cmd


# --------------------------------------------------------------------------------------------
# Making one figure
# --------------------------------------------------------------------------------------------


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
    try:  # params= of @figure must fit the function before anything runs
        inspect.signature(func).bind(ctx, **info.params)
    except TypeError as err:
        raise PipelineError(
            f"figure {info.name!r}: params {sorted(info.params)} of @figure do not fit "
            f"{info.function}(ctx, ...): {err}; allowed: the function's keyword parameters"
        ) from None
    quiet_lightning()  # Lightning sets its loggers' levels when it is first imported
    style = importlib.import_module(STYLE_MODULE)
    reset_torch_globals()
    seed_everything(ctx.seed)
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
    cache: bool = True,
) -> dict[str, Any]:
    """Make one figure: import its module, run it, write both SVGs and its manifest entry.

    Nothing is written unless the function returns a valid result; the files and the entry
    are replaced atomically, one after the other. ``write=False`` makes and checks the
    figure without writing its files or entry.

    Results the figure computes with ``ctx.compute`` come from (and go to) the results cache
    under ``<root>/.cache/results`` unless ``cache=False``, or the run is distributed over
    several processes (they must all compute). The entry's ``results`` list says which
    cached results the figure used: key, when and where they were computed, and how long
    that took.

    Returns:
        The new manifest entry.
    """
    sources = sources or Sources(project)
    deps = dependencies(project, info, sources=sources)  # the sources as they are now
    fp = _fingerprint_of(info, ctx.profile, ctx.seed, deps)
    from block4.results_cache import RESULTS_DIR, ResultsCache

    results = ResultsCache(
        project.root / RESULTS_DIR,
        sources,
        device=device_name(ctx),
        enabled=cache,
        allowed=lambda: single_process(ctx),  # asked when torch is imported
    )
    fig, numbers, wall = _call_figure(info, dataclasses.replace(ctx, results_cache=results))
    import matplotlib.pyplot as plt

    drawn_from = time.perf_counter()
    try:
        light, dark = render(fig)
    finally:
        plt.close(fig)
    drawing = time.perf_counter() - drawn_from
    files = {"light": f"{info.name}.svg", "dark": f"{info.name}.dark.svg"}
    entry = {
        "format": FORMAT_VERSION,
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
        **run_record(ctx, wall),
        "draw_time_s": round(drawing, 2),  # both SVGs, after the figure function returned
        "numbers": numbers,
        "results": results.used,
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
