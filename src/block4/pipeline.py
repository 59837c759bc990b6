"""The figure pipeline: discovery, fingerprints, the manifest and the freshness contract.

Every figure of the site is a function registered with
:func:`block4.figures.registry.figure`. This module finds those functions by *reading* the
figure modules with :mod:`ast` (so listing and checking never import torch or Lightning),
computes a **fingerprint** per figure, runs the figures that are stale and records what it
made in ``docs/figures/manifest.json``.

Fingerprint:
    sha256 over the pipeline's format version, the figure's name, function, parameters,
    profile and seed, and the code of every source it depends on (Python files as their
    syntax tree without docstrings, so comments, docstrings and formatting do not count;
    data files by their bytes): its own module, every
    ``block4`` module that module imports (transitively, including imports inside
    functions and ``"block4.x"`` strings), ``block4/style.py``, and package data
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

The command line (``python scripts/make_figures.py``) is :func:`main`.
"""

from __future__ import annotations

import argparse
import ast
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
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from block4.figures.registry import NAME_PATTERN, PROFILES, FigureContext

#: Bumped when the fingerprint recipe or the manifest layout changes (makes every figure stale).
#: Intra-op CPU threads every figure runs with, whatever the machine (reproducible numbers).
FIGURE_THREADS = int(os.environ.get("BLOCK4_FIGURE_THREADS", "1"))
FORMAT_VERSION = 3  # 3: Python sources hashed as code (docstrings, comments, layout ignored)

#: The package whose sources fingerprints cover.
PACKAGE = "block4"

#: Profiles from worst to best; a run asked for a better profile than an entry was made
#: with re-makes that figure (``full`` is never replaced by ``quick`` unless forced).
PROFILE_RANK = {name: rank for rank, name in enumerate(PROFILES)}

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

#: The command that (re)makes figures, as shown in messages.
COMMAND = "python scripts/make_figures.py"

#: Keys of the numbers dict: they appear in prose as ``{{ figure.key }}``.
NUMBER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Environment variable through which a run tells the processes Lightning's DDP launcher
# starts (they re-execute the script) exactly which figures to make, in which order.
_PLAN_ENV = "BLOCK4_FIGURES_PLAN"


class PipelineError(Exception):
    """A problem the user must fix (bad figure declaration, bad input, bad return value)."""


class UsageError(PipelineError):
    """A bad command-line input: unknown figure, profile or device specification."""


# --------------------------------------------------------------------------------------------
# Project layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """Where the sources and the generated figures of a checkout live.

    Args:
        root: the repository root (holding ``src/`` and ``docs/``).
        src: the directory containing the ``block4`` package (default ``root/src``).
        out_dir: where figures and ``manifest.json`` go (default ``root/docs/figures``).
    """

    root: Path
    src: Path = None  # type: ignore[assignment]
    out_dir: Path = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        root = Path(self.root).resolve()
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "src", Path(self.src or root / "src").resolve())
        object.__setattr__(self, "out_dir", Path(self.out_dir or root / "docs" / "figures"))

    @property
    def package_dir(self) -> Path:
        return self.src / PACKAGE

    @property
    def figures_dir(self) -> Path:
        return self.package_dir / "figures"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.out_dir / ".manifest.lock"

    def relative(self, path: Path) -> str:
        """``path`` relative to the repository root, in POSIX form (for messages and links)."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


# --------------------------------------------------------------------------------------------
# Discovery (ast only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureInfo:
    """A figure as declared in the source: ``@figure(name, chapter=..., params=...)``.

    Attributes:
        name: the figure's name (its files are ``<name>.svg`` and ``<name>.dark.svg``).
        chapter: the chapter page it belongs to.
        params: the literal keyword arguments passed to the function.
        module: the dotted module name, e.g. ``block4.figures.activations``.
        function: the function's name in that module.
        path: the module's file.
        line: the line of the ``def``.
        group: ``group=`` of the decorator: figures sharing work, made in one process by
            ``--jobs N`` (None: the figure stands alone).
    """

    name: str
    chapter: str
    params: dict[str, Any]
    module: str
    function: str
    path: Path
    line: int
    group: str | None = None


class _Mark(str):
    """A structural token of :func:`code_signature` (never confused with a string constant)."""


def code_signature(tree: ast.Module) -> str:
    """A canonical text of a module's code: its AST without docstrings and positions.

    Editing a comment, a docstring or the layout of a module leaves its signature (and so
    every figure that depends on it) unchanged; changing any statement or value changes it.
    A body that is only a docstring counts as ``pass``. The tree is not modified.
    """
    docstrings: dict[int, bool] = {}  # id of a docstring statement -> it is the whole body
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings[id(first)] = len(node.body) == 1
    parts: list[str] = []
    stack: list[object] = [tree]
    while stack:  # an explicit stack: deep expressions do not hit the recursion limit
        item = stack.pop()
        if isinstance(item, _Mark):
            parts.append(item)
        elif isinstance(item, ast.AST):
            if id(item) in docstrings:
                if docstrings[id(item)]:
                    parts.append("Pass")
                continue
            parts.append(type(item).__name__)
            for name, value in reversed(list(ast.iter_fields(item))):
                stack.extend((value, _Mark(f".{name}")))
        elif isinstance(item, list):
            parts.append("[")
            stack.append(_Mark("]"))
            stack.extend(reversed(item))
        else:
            parts.append(repr(item))
    return "\x00".join(parts)


class _Sources:
    """Reads, hashes and parses the package's source files once per process."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._bytes: dict[Path, bytes] = {}
        self._trees: dict[Path, ast.Module] = {}
        self._digests: dict[Path, str] = {}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._direct: dict[str, tuple[set[str], set[Path]]] = {}
        self._data_files: dict[str, list[Path]] | None = None

    def read(self, path: Path) -> bytes:
        if path not in self._bytes:
            self._bytes[path] = path.read_bytes()
        return self._bytes[path]

    def digest(self, path: Path) -> str:
        """sha256 of what the file *does*: Python sources are hashed as their syntax tree
        without docstrings (comments, docstrings, blank lines and formatting do not count);
        any other file by its bytes. Computed once per file and process."""
        if path not in self._digests:
            if path.suffix == ".py":
                signature = code_signature(self.tree(path)).encode()
            else:
                signature = self.read(path)
            self._digests[path] = hashlib.sha256(signature).hexdigest()
        return self._digests[path]

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            try:
                self._trees[path] = ast.parse(self.read(path), filename=str(path))
            except SyntaxError as err:
                raise PipelineError(
                    f"{self.project.relative(path)}:{err.lineno}: cannot parse ({err.msg})"
                ) from None
        return self._trees[path]

    def module_file(self, module: str) -> Path | None:
        """The file of ``module`` (``block4.x.y``) under ``src``, or None."""
        parts = module.split(".")
        if not parts or parts[0] != PACKAGE or not all(p.isidentifier() for p in parts):
            return None
        base = self.project.src.joinpath(*parts)
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        return None

    def data_files(self) -> dict[str, list[Path]]:
        """Non-Python files of the package by base name (data a module may load)."""
        if self._data_files is None:
            found: dict[str, list[Path]] = {}
            for path in sorted(self.project.package_dir.rglob("*")):
                if (
                    path.is_file()
                    and path.suffix not in (".py", ".pyc")
                    and "__pycache__" not in path.parts
                ):
                    found.setdefault(path.name, []).append(path)
            self._data_files = found
        return self._data_files

    def direct_dependencies(self, module: str) -> tuple[set[str], set[Path]]:
        """Modules ``module`` imports (anywhere in it) and data files it names."""
        if module not in self._direct:
            self._direct[module] = self._scan(module)
        return self._direct[module]

    def _scan(self, module: str) -> tuple[set[str], set[Path]]:
        path = self.module_file(module)
        if path is None:
            return set(), set()
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        candidates: set[str] = set()
        data: set[Path] = set()
        data_files = self.data_files()
        for node in ast.walk(self.tree(path)):
            if isinstance(node, ast.Import):
                candidates.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: -(node.level - 1)]
                    base = ".".join(base_parts)
                    if node.module:
                        base = f"{base}.{node.module}" if base else node.module
                else:
                    base = node.module or ""
                candidates.add(base)
                candidates.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if value.startswith(PACKAGE + ".") and " " not in value:
                    candidates.add(value)
                name = value.rsplit("/", 1)[-1]
                if name in data_files and "\n" not in value:
                    data.update(data_files[name])
        modules: set[str] = set()
        for candidate in candidates:
            parts = candidate.split(".")
            # Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c.
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if self.module_file(prefix) is not None:
                    modules.add(prefix)
        modules.discard(module)
        return modules, data

    def closure(self, module: str) -> tuple[str, ...]:
        """Every source file (relative to ``src``) that ``module`` depends on, sorted."""
        if module in self._deps:
            return self._deps[module]
        seen_modules: set[str] = set()
        files: set[Path] = set()
        todo = [module]
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        while todo:
            current = todo.pop()
            if current in seen_modules:
                continue
            seen_modules.add(current)
            path = self.module_file(current)
            if path is None:
                continue
            files.add(path)
            imported, data = self.direct_dependencies(current)
            files.update(data)
            todo.extend(sorted(imported - seen_modules))
        style = self.project.package_dir / "style.py"
        if style.is_file():
            files.add(style)
        result = tuple(sorted(p.relative_to(self.project.src).as_posix() for p in files))
        self._deps[module] = result
        return result


def _literal(node: ast.AST, what: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PipelineError(
            f"{where}: {what} of @figure must be a literal (a string, number, or a "
            "list/dict of literals) so the pipeline can read it without importing the module"
        ) from None


def _is_figure_decorator(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "figure") or (
        isinstance(func, ast.Attribute) and func.attr == "figure"
    )


def discover(project: Project, *, sources: _Sources | None = None) -> dict[str, FigureInfo]:
    """Find every ``@figure`` in ``block4/figures/*.py`` by reading the source.

    Returns:
        The figures by name, sorted by module and line.

    Raises:
        PipelineError: a decorator with non-literal arguments, a bad or duplicate name, or a
            module that does not parse.
    """
    sources = sources or _Sources(project)
    found: dict[str, FigureInfo] = {}
    if not project.figures_dir.is_dir():
        return found
    for path in sorted(project.figures_dir.glob("*.py")):
        module = f"{PACKAGE}.figures.{path.stem}" if path.stem != "__init__" else ""
        if not module:
            continue
        tree = sources.tree(path)
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if not _is_figure_decorator(dec):
                    continue
                assert isinstance(dec, ast.Call)
                where = f"{project.relative(path)}:{dec.lineno}"
                if id(node) not in top_level:
                    raise PipelineError(
                        f"{where}: @figure must decorate a function at the top level of the "
                        "module (the pipeline imports it by name)"
                    )
                kwargs = {kw.arg: kw.value for kw in dec.keywords if kw.arg}
                if dec.args:
                    name = _literal(dec.args[0], "the name", where)
                elif "name" in kwargs:
                    name = _literal(kwargs["name"], "the name", where)
                else:
                    raise PipelineError(f"{where}: @figure needs a name as first argument")
                if not isinstance(name, str) or not NAME_PATTERN.match(name):
                    raise PipelineError(
                        f"{where}: figure name {name!r} must be snake_case: [a-z][a-z0-9_]*"
                    )
                if "chapter" not in kwargs:
                    raise PipelineError(f"{where}: @figure({name!r}) needs chapter=...")
                chapter = _literal(kwargs["chapter"], "chapter", where)
                params = _literal(kwargs["params"], "params", where) if "params" in kwargs else {}
                if params is None:
                    params = {}
                if not isinstance(params, dict):
                    raise PipelineError(f"{where}: params of @figure({name!r}) must be a dict")
                group = _literal(kwargs["group"], "group", where) if "group" in kwargs else None
                if group is not None and not (isinstance(group, str) and group):
                    raise PipelineError(
                        f"{where}: group of @figure({name!r}) must be a non-empty string"
                    )
                if name in found:
                    other = found[name]
                    raise PipelineError(
                        f"figure {name!r} is defined twice: "
                        f"{project.relative(other.path)}:{other.line} and {where}"
                    )
                found[name] = FigureInfo(
                    name=name,
                    chapter=str(chapter),
                    params=params,
                    module=module,
                    function=node.name,
                    path=path,
                    line=node.lineno,
                    group=group,
                )
    return found


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


def dependencies(
    project: Project, info: FigureInfo, *, sources: _Sources | None = None
) -> dict[str, str]:
    """The source files ``info`` depends on (relative to ``src``) with their sha256."""
    sources = sources or _Sources(project)
    return {rel: sources.digest(project.src / rel) for rel in sources.closure(info.module)}


def fingerprint(
    project: Project,
    info: FigureInfo,
    profile: str,
    seed: int,
    *,
    sources: _Sources | None = None,
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
    sources: _Sources | None = None,
) -> dict[str, FigureStatus]:
    """The status of every declared figure (and of orphaned manifest entries)."""
    sources = sources or _Sources(project)
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
# Running figures
# --------------------------------------------------------------------------------------------


def is_rank_zero() -> bool:
    """False in the extra processes of a distributed run (only rank 0 writes files)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "GROUP_RANK"):
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return False
    return True


def external_world_size() -> int:
    """How many processes a cluster launcher (``srun``, ``torchrun``) started for this run."""
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


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
    from block4 import style

    with style.context():
        light = io.BytesIO()
        fig.savefig(light, format="svg", metadata={"Date": None}, facecolor="white")
        style.dark_variant(fig)
        dark = io.BytesIO()
        fig.savefig(dark, format="svg", metadata={"Date": None}, transparent=True)
    return light.getvalue(), dark.getvalue()


def run_figure(
    project: Project,
    info: FigureInfo,
    ctx: FigureContext,
    *,
    write: bool = True,
    sources: _Sources | None = None,
) -> dict[str, Any]:
    """Make one figure: import its module, run it, write both SVGs and its manifest entry.

    Nothing is written unless the function returns a valid result; the files and the entry
    are replaced atomically, one after the other.

    Returns:
        The new manifest entry.
    """
    sources = sources or _Sources(project)
    deps = dependencies(project, info, sources=sources)  # the sources as they are now
    fp = _fingerprint_of(info, ctx.profile, ctx.seed, deps)
    import matplotlib

    matplotlib.use("Agg")  # figures go to files: no window, on any platform
    module = importlib.import_module(info.module)
    _quiet_lightning()  # Lightning sets its loggers' levels when it is first imported
    func = getattr(module, info.function, None)
    if func is None:
        raise PipelineError(f"{info.module} has no function {info.function!r}")
    from block4 import style

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
        raise PipelineError(
            f"figure {info.name!r} must return a matplotlib Figure first, got {type(fig).__name__}"
        )
    numbers = validate_numbers(info.name, numbers)
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
        atomic_write(project.out_dir / files["light"], light)
        atomic_write(project.out_dir / files["dark"], dark)
        update_manifest(project, info.name, entry)
    return entry


def prune_orphans(project: Project, names: Iterable[str]) -> None:
    """Remove the files and manifest entries of figures whose function no longer exists."""
    with manifest_lock(project):
        manifest = load_manifest(project)
        for name in names:
            entry = manifest["figures"].pop(name, None) or {}
            for f in entry.get("files", {}).values():
                with contextlib.suppress(FileNotFoundError):
                    (project.out_dir / f).unlink()
        atomic_write(project.manifest_path, _dump_manifest(manifest))


def _figure_in_worker(
    project: Project, info: FigureInfo, ctx: FigureContext
) -> tuple[bool, Any, float]:
    """Make one figure in a worker process of ``--jobs N``.

    Returns ``(True, entry, seconds)``, or ``(False, message, seconds)`` when the figure
    failed (the message ends with the traceback unless it is a `PipelineError`). Errors
    travel back as text: not every exception a figure may raise can be pickled.
    """
    start = time.perf_counter()
    try:
        entry = run_figure(project, info, ctx, sources=_Sources(project))
    except Exception as err:
        message = str(err)
        if not isinstance(err, PipelineError):
            message += "\n" + traceback.format_exc()
        return False, message, time.perf_counter() - start
    return True, entry, time.perf_counter() - start


_REPORTS: Any = None  # in a worker process: the queue its results go back through


def _start_worker(reports: Any) -> None:
    global _REPORTS
    _REPORTS = reports
    _quiet_lightning()


def _unit_in_worker(project: Project, unit: list[tuple[FigureInfo, FigureContext]]) -> None:
    """Make the figures of one unit in order, reporting each as soon as it is done."""
    for info, ctx in unit:
        _REPORTS.put((info.name, *_figure_in_worker(project, info, ctx)))


def parallel_units(
    jobs: list[tuple[FigureInfo, FigureContext]], estimates: dict[str, float]
) -> list[list[tuple[FigureInfo, FigureContext]]]:
    """The units of work of ``--jobs N``, the longest first.

    Figures that name the same ``group`` form one unit (in the order given); every other
    figure is a unit of its own. A unit's length is the sum of its figures' estimated
    seconds; a figure without an estimate counts as longer than any unit of known figures,
    so it starts early.
    """
    units: dict[str, list[tuple[FigureInfo, FigureContext]]] = {}
    for info, ctx in jobs:
        key = f"group:{info.module}:{info.group}" if info.group else f"figure:{info.name}"
        units.setdefault(key, []).append((info, ctx))
    unknown = sum(estimates.values()) + 1.0  # longer than any unit of known figures

    def length(unit: list[tuple[FigureInfo, FigureContext]]) -> float:
        return sum(estimates.get(info.name, unknown) for info, _ in unit)

    return sorted(units.values(), key=length, reverse=True)


def _stop_workers(executor: Any) -> None:
    """Interrupt the workers of ``executor`` (each cleans up its temporary files), then end it."""
    import signal

    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)  # no new work: idle workers exit
    deadline = time.monotonic() + 0.5  # a Ctrl+C from the terminal reached them already
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(proc.pid, signal.SIGINT)
    for proc in processes:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


def run_parallel(
    project: Project,
    jobs: list[tuple[FigureInfo, FigureContext]],
    workers: int,
    progress: Progress,
    made: list[str],
    failed: list[str],
    hints: dict[str, float],
) -> None:
    """Make ``jobs`` in ``workers`` processes (units from `parallel_units`, longest first).

    ``hints`` are the seconds each figure is expected to take, used only to start the
    longest first.

    Every worker writes its own figures' files and manifest entries (atomically, under the
    manifest lock), so a crash or an interrupt loses at most the figures still running. The
    names of the figures made and failed are appended to ``made`` and ``failed`` as they end.

    Raises:
        KeyboardInterrupt: after stopping the workers, when the run was interrupted.
    """
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor

    infos = {info.name: info for info, _ in jobs}
    units = parallel_units(jobs, hints)
    # "spawn": a fresh interpreter per worker (no forked torch/OpenMP state, any platform).
    mp = multiprocessing.get_context("spawn")
    reports = mp.Queue()
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(units)),
        mp_context=mp,
        initializer=_start_worker,
        initargs=(reports,),
    )
    pending = set(infos)

    def report(name: str, ok: bool, result: Any, seconds: float) -> None:
        pending.discard(name)
        info = infos[name]
        if ok:
            made.append(name)
            progress.finished(info, seconds, True, sorted(pending), _size_hint(result))
            return
        failed.append(name)
        progress.finished(info, seconds, False, sorted(pending))
        where = f"{project.relative(info.path)}:{info.line}"
        print(f"    error in {name} ({where}): {result}", file=sys.stderr)

    all_ended = 0.0
    try:
        futures = {executor.submit(_unit_in_worker, project, unit): unit for unit in units}
        while pending:
            try:
                name, ok, result, seconds = reports.get(timeout=0.2)
            except queue_module.Empty:
                for future in [f for f in futures if f.done()]:
                    unit = futures.pop(future)
                    if future.exception() is not None:  # the worker process died
                        for info, _ in unit:
                            if info.name in pending:
                                report(
                                    info.name,
                                    False,
                                    f"its worker process died: {future.exception()!r}",
                                    0.0,
                                )
                if futures:
                    continue
                # every unit has ended; a report still in flight arrives within moments
                all_ended = all_ended or time.monotonic()
                if time.monotonic() - all_ended > 5.0:
                    for name in sorted(pending):
                        report(name, False, "its worker ended without a result", 0.0)
                continue
            if name in pending:
                report(name, ok, result, seconds)
    except KeyboardInterrupt:
        _stop_workers(executor)
        raise
    executor.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class Progress:
    """One line per figure with the overall position, elapsed time and an ETA."""

    total: int
    estimates: dict[str, float] = field(default_factory=dict)
    stream: Any = None
    done: int = 0
    start: float = field(default_factory=time.perf_counter)
    spent: list[float] = field(default_factory=list)
    jobs: int = 1

    def _eta(self, remaining: Sequence[str]) -> str:
        avg = sum(self.spent) / len(self.spent) if self.spent else None
        total = 0.0
        for name in remaining:
            guess = self.estimates.get(name, avg)
            if guess is None:
                return "?"
            total += guess
        return _clock(total / min(self.jobs, max(len(remaining), 1)))

    def _bar(self) -> str:
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        return "#" * filled + "." * (width - filled)

    def begin(self, k: int, info: FigureInfo, profile: str, remaining: Sequence[str]) -> None:
        elapsed = _clock(time.perf_counter() - self.start)
        self._print(
            f"[{self._bar()}] figure {k}/{self.total}: {info.name} ({info.chapter}, {profile})"
            f" | elapsed {elapsed} | ETA {self._eta(remaining)}"
        )

    def end(self, info: FigureInfo, seconds: float, ok: bool, detail: str = "") -> None:
        self.done += 1
        if ok:
            self.spent.append(seconds)
        mark = "done" if ok else "FAILED"
        self._print(f"    {mark} {info.name} in {seconds:.1f} s{detail}")

    def finished(
        self,
        info: FigureInfo,
        seconds: float,
        ok: bool,
        remaining: Sequence[str],
        detail: str = "",
    ) -> None:
        """One line for a figure made by a parallel worker (they finish in any order)."""
        self.done += 1
        if ok:
            self.spent.append(seconds)
        elapsed = _clock(time.perf_counter() - self.start)
        mark = "done" if ok else "FAILED"
        self._print(
            f"[{self._bar()}] {self.done}/{self.total} {mark} {info.name} ({info.chapter}) in "
            f"{seconds:.1f} s{detail} | elapsed {elapsed} | ETA {self._eta(remaining)}"
        )

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

_EPILOG = f"""\
profiles:
  smoke   {PROFILES["smoke"]}
  quick   {PROFILES["quick"]}
  full    {PROFILES["full"]}

freshness:
  A figure is fresh when the fingerprint stored in docs/figures/manifest.json (a hash of the
  source of every block4 module the figure imports, its parameters, profile and seed) still
  matches the code. A run makes only stale or missing figures, plus figures made with a worse
  profile than --profile (default quick) or another --seed; --force re-makes everything
  selected. `mkdocs build --strict` refuses a page that shows a stale figure. Interrupt any
  time: a re-run resumes.

examples:
  {COMMAND}                          # make stale/missing figures (quick profile)
  {COMMAND} --list                   # name, chapter, status, profile, device of every figure
  {COMMAND} --check                  # exit 1 and name every stale figure (used by CI)
  {COMMAND} --only activation_functions --force
  {COMMAND} --jobs auto               # one figure per CPU core at a time (same files)
  {COMMAND} --profile full --accelerator cpu --jobs auto   # publication figures on all CPU cores
  {COMMAND} --profile full --accelerator gpu --devices 1     # publication figures on one GPU

multi-GPU and clusters (Lightning is the distributed engine; only rank 0 writes files):
  {COMMAND} --profile full --accelerator gpu --devices 4 --strategy ddp
  SLURM: in an sbatch script with `#SBATCH --nodes=2 --ntasks-per-node=4 --gpus-per-node=4`
    srun {COMMAND} --profile full --accelerator gpu --devices 4 --num-nodes 2 --strategy ddp
  (--devices and --num-nodes must match the SLURM allocation; Lightning reads the ranks
  from SLURM's environment.)

exit status: 0 success, 1 a figure failed or --check found stale figures,
  2 bad command-line input (nothing is written), 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"make_figures.py: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``make_figures.py`` argument parser."""
    p = _Parser(
        prog="make_figures.py",
        description="Make the figures of the block4 site and keep them in step with the code.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=None,
        help="how much compute each figure gets (default: quick); see 'profiles' below",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="make only these figures")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list figures and their status")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 if a figure is stale or missing; run nothing"
    )
    p.add_argument("--force", action="store_true", help="re-make the selected figures")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base seed (default: the seed a figure was made with, else 0)",
    )
    p.add_argument(
        "--accelerator",
        choices=list(ACCELERATORS),
        default="auto",
        help="Lightning Trainer accelerator (default: auto)",
    )
    p.add_argument(
        "--devices",
        default="auto",
        help="Lightning Trainer devices: auto, a count N, -1 (all) or a list like 0,1",
    )
    p.add_argument(
        "--num-nodes", default="1", help="Lightning Trainer num_nodes (default: 1)", metavar="N"
    )
    p.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        default="auto",
        help="Lightning Trainer strategy (default: auto; ddp for several GPUs or nodes)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        default="1",
        metavar="N",
        help="make up to N figures at once, each in its own process (default: 1; 'auto': one "
        "per CPU core). Every figure runs on one CPU thread either way, so the numbers and "
        "files are the same as with --jobs 1",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where figures and manifest.json go (default: docs/figures)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show Lightning's progress bar per training run (default: when a terminal)",
    )
    return p


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


def _check_jobs(jobs: int, devices: int | str, num_nodes: int, strategy: str) -> None:
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


def _check_accelerator(accelerator: str, devices: int | str) -> None:
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


def _format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def list_table(status: dict[str, FigureStatus]) -> str:
    """The ``--list`` table."""
    rows = [["NAME", "CHAPTER", "STATUS", "PROFILE", "DEVICE", "DATE", "REASON"]]
    for name, st in sorted(
        status.items(), key=lambda kv: ((kv[1].info.chapter if kv[1].info else "~"), kv[0])
    ):
        entry = st.entry or {}
        rows.append(
            [
                name,
                st.info.chapter if st.info else entry.get("chapter", "-"),
                st.state,
                entry.get("profile", "-"),
                entry.get("device", "-"),
                entry.get("date", "-")[:10],
                st.reason,
            ]
        )
    counts: dict[str, int] = {}
    for st in status.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return _format_table(rows) + f"\n\n{len(status)} figures: {summary}"


#: A light SVG larger than this gets a hint (pages load every figure in two variants).
LARGE_SVG_BYTES = 400_000


def _size_hint(entry: dict[str, Any]) -> str:
    size = int(entry.get("bytes", {}).get("light", 0))
    if size <= LARGE_SVG_BYTES:
        return ""
    return (
        f" (the SVG is {size // 1000} kB: draw fewer points, or pass rasterized=True to dense "
        "artists such as fills, images and scatter clouds)"
    )


def main(argv: Sequence[str] | None = None, *, root: Path | None = None) -> int:
    """Run the command line; returns the exit status (see ``make_figures.py --help``)."""
    args = build_parser().parse_args(argv)
    root = Path(root or Path.cwd())
    try:
        devices = parse_devices(args.devices)
        num_nodes = parse_num_nodes(args.num_nodes)
        jobs = parse_jobs(args.jobs)
        _check_jobs(jobs, devices, num_nodes, args.strategy)
        project = Project(root, out_dir=args.out_dir.resolve() if args.out_dir else None)
        sources = _Sources(project)
        figures = discover(project, sources=sources)
        if args.only:
            unknown = [n for n in args.only if n not in figures]
            if unknown:
                raise UsageError(
                    f"unknown figure {', '.join(map(repr, unknown))}; allowed: "
                    + (", ".join(sorted(figures)) or "(no figures are defined)")
                )
        status = figure_status(project, figures=figures, sources=sources)
    except UsageError as err:
        print(f"make_figures.py: error: {err}", file=sys.stderr)
        return 2
    except PipelineError as err:
        print(f"make_figures.py: error: {err}", file=sys.stderr)
        return 2

    selected = list(args.only) if args.only else list(figures)
    if args.list:
        shown = {n: s for n, s in status.items() if not args.only or n in selected}
        print(list_table(shown) if shown else "no figures are defined")
        return 0
    if args.check:
        bad = [status[n] for n in sorted(status) if not status[n].fresh]
        if args.only:
            bad = [s for s in bad if s.name in selected]
        if not bad:
            print(f"all {len(selected)} figures are fresh")
            return 0
        for st in bad:
            print(f"{st.state}: {st.name} ({st.reason})")
        runnable = [s.name for s in bad if s.state != "orphan"]
        if runnable:
            print(f"refresh with: {refresh_command(runnable)}")
        if any(s.state == "orphan" for s in bad):
            print(f"remove orphans with: {COMMAND}")
        return 1

    profile = args.profile or "quick"
    force = args.force
    if not force and external_world_size() > 1:
        # srun/torchrun start every rank at once; a rank that starts late would see the
        # manifest rank 0 already updated and plan fewer figures. Make all selected figures.
        force = True
        if is_rank_zero():
            print("several ranks were launched: making every selected figure", file=sys.stderr)
    plan_env = os.environ.get(_PLAN_ENV)
    if plan_env:  # a process started by Lightning's DDP launcher: do what rank 0 does
        plan = json.loads(plan_env)
        todo = [(name, seed) for name, seed in plan["figures"] if name in figures]
        profile = plan["profile"]
    else:
        todo = []
        for name in selected:
            st = status[name]
            entry = st.entry or {}
            recorded = entry.get("profile")
            # A better profile than the figure was made with, or another seed, re-makes it.
            upgrade = recorded in PROFILE_RANK and PROFILE_RANK[profile] > PROFILE_RANK[recorded]
            reseed = args.seed is not None and entry.get("seed") != args.seed
            if force or not st.fresh or upgrade or reseed:
                seed = args.seed if args.seed is not None else (st.entry or {}).get("seed", 0)
                todo.append((name, int(seed)))
    rank_zero = is_rank_zero()
    orphans = [n for n, s in status.items() if s.state == "orphan"]
    if orphans and not args.only and rank_zero:
        prune_orphans(project, orphans)
        print(f"removed orphaned figures: {', '.join(orphans)}", file=sys.stderr)
    if not todo:
        if rank_zero:
            print(f"all {len(selected)} figures are fresh; nothing to do")
        return 0

    try:
        _check_accelerator(args.accelerator, devices)
    except UsageError as err:
        print(f"make_figures.py: error: {err}", file=sys.stderr)
        return 2
    os.environ[_PLAN_ENV] = json.dumps({"profile": profile, "figures": todo})
    progress_bar = sys.stderr.isatty() if args.progress is None else args.progress
    _quiet_lightning()
    estimates = {
        n: float((status[n].entry or {}).get("wall_time_s", 0))
        for n, _ in todo
        if (status[n].entry or {}).get("profile") == profile
    }
    workers = min(jobs, len(todo))
    progress = Progress(total=len(todo), estimates=estimates, jobs=workers)
    failures: list[str] = []
    made: list[str] = []

    def context(name: str, seed: int) -> FigureContext:
        return FigureContext(
            profile=profile,
            seed=seed,
            accelerator=args.accelerator,
            # parallel workers are one process each: "auto" must not start DDP on many GPUs
            devices=1 if workers > 1 and devices == "auto" else devices,
            num_nodes=num_nodes,
            strategy=args.strategy,
            out_dir=project.out_dir,
            progress=progress_bar and rank_zero and workers == 1,
            name=name,
        )

    def interrupted(where: str) -> int:
        if rank_zero:
            print(
                f"\ninterrupted during {where}: the previous files and manifest entries of the "
                f"figures being made are unchanged; {len(made)} figure(s) were saved. Run the "
                "same command again to resume.",
                file=sys.stderr,
            )
        return 130

    if workers > 1:
        print(
            f"making {len(todo)} figures in {workers} parallel processes ({profile} profile)",
            file=sys.stderr,
        )
        try:
            # the longest first: times of this profile, else those of the last run of any
            recorded = {n: (status[n].entry or {}).get("wall_time_s") for n, _ in todo}
            hints = {n: float(t) for n, t in recorded.items() if t is not None} | estimates
            run_parallel(
                project,
                [(figures[name], context(name, seed)) for name, seed in todo],
                workers,
                progress,
                made,
                failures,
                hints,
            )
        except KeyboardInterrupt:
            return interrupted(", ".join(n for n, _ in todo if n not in made + failures))
    else:
        for k, (name, seed) in enumerate(todo, start=1):
            info = figures[name]
            ctx = context(name, seed)
            if rank_zero:
                progress.begin(k, info, profile, [n for n, _ in todo[k - 1 :]])
            start = time.perf_counter()
            try:
                entry = run_figure(project, info, ctx, write=rank_zero, sources=_Sources(project))
            except (KeyboardInterrupt, SystemExit):
                # Lightning's Trainer catches Ctrl+C itself, shuts down and calls sys.exit(1).
                return interrupted(name)
            except Exception as err:  # one failing figure must not stop the others
                failures.append(name)
                if rank_zero:
                    progress.end(info, time.perf_counter() - start, ok=False)
                    where = f"{project.relative(info.path)}:{info.line}"
                    print(f"    error in {info.name} ({where}): {err}", file=sys.stderr)
                    if not isinstance(err, PipelineError):
                        traceback.print_exc(file=sys.stderr)
                continue
            made.append(name)
            if rank_zero:
                progress.end(info, time.perf_counter() - start, ok=True, detail=_size_hint(entry))
    if rank_zero:
        elapsed = _clock(time.perf_counter() - progress.start)
        print(
            f"made {len(made)} figure(s) in {elapsed} ({profile} profile"
            f"{f', {workers} processes' if workers > 1 else ''}) into "
            f"{project.relative(project.out_dir)}",
            file=sys.stderr,
        )
        if failures:
            print(
                f"{len(failures)} figure(s) failed: {', '.join(failures)}; their previous files "
                f"and manifest entries are unchanged. Fix and re-run: "
                f"{refresh_command(failures, profile)}",
                file=sys.stderr,
            )
    return 1 if failures else 0
