"""The figure pipeline's view of the source code: where it lives, what a figure depends on.

Everything here reads files and syntax trees only (`ast`); nothing imports a figure
module, torch or Lightning, so listing and checking figures stays fast.

* `Project`: where the package and the generated figures of a checkout live.
* `discover`: every ``@figure`` of ``block4/figures/*.py``, read from the source (the
  single source of truth about which figures exist).
* `block4.code_closure.code_signature` (re-exported here): the canonical text of a piece of
  code (docstrings, comments and layout left out), the unit every fingerprint is built from.
* `Sources`: reads, parses and hashes the package's files once per process and
  resolves what a module depends on and what it imports as it loads.

`block4.pipeline` builds the fingerprints and the manifest on top of this.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from block4.code_closure import (
    TOP_LEVEL,
    WHOLE,
    ModuleSymbols,
    Unit,
    code_signature,
    imported_names,
    load_time,
    module_symbols,
    references,
)
from block4.figures.registry import FigureMark, figure_mark_of

__all__ = [
    "PACKAGE",
    "STYLE_MODULE",
    "CONTEXT_MODULE",
    "FigureInfo",
    "PipelineError",
    "Project",
    "Sources",
    "atomic_write",
    "code_signature",
    "discover",
]

#: The package whose sources fingerprints cover.
PACKAGE = "block4"

STYLE_MODULE = "block4.style"
"""The plot style every figure is drawn and rendered with: part of every figure's
dependencies (the pipeline applies it around each figure and for the dark variant)."""

# Bumped when the code index's layout or the analysis behind it changes.
_INDEX_FORMAT = 2

#: The module of `FigureContext`, which every figure gets.
CONTEXT_MODULE = "block4.figures.registry"


class PipelineError(Exception):
    """A problem the user must fix (bad figure declaration, bad input, bad return value)."""


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


#: sha256 of package files by (path, size, mtime in ns), for every Sources of this process;
#: kept only for files unmodified for `_SETTLED_NS`.
_FILE_DIGESTS: dict[tuple[Path, int, int], bytes] = {}
_SETTLED_NS = 2_000_000_000
#: Code indexes read by this process, by (index file, package key): unit digests, unit
#: dependencies and the stored @figure declarations (None when the index had none).
_INDEXES: dict[tuple[Path, str], tuple[dict, dict, list | None]] = {}


class Sources:
    """Reads, parses and hashes the package's source files once per process, and resolves
    what a piece of code depends on (see `block4.code_closure`)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._bytes: dict[Path, bytes] = {}
        self._trees: dict[Path, ast.Module] = {}
        self._symbols: dict[str, ModuleSymbols | None] = {}
        self._files: dict[str, Path | None] = {}
        self._unit_digests: dict[Unit, str] = {}
        self._unit_deps: dict[Unit, tuple[frozenset[Unit], frozenset[Path]]] = {}
        self._data_files: dict[str, list[Path]] | None = None
        self._index_key: str | None = None
        self._indexed: set[Unit] = set()
        # the @figure declarations of the package as stored in the index (see `discover`)
        self._figures: list[list[Any]] | None = None
        self._figures_indexed = False

    @property
    def index_path(self) -> Path:
        """Where the analysis of the package's code is kept between runs (safe to delete)."""
        return self.project.root / ".cache" / "pipeline" / "code-index.json"

    def _package_key(self) -> str:
        """sha256 over every file of the package: the code index is valid for exactly these."""
        h = hashlib.sha256(f"{_INDEX_FORMAT}\0{self.project.src}".encode())
        for path in sorted(self.project.package_dir.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                if not S_ISREG(stat.st_mode):
                    continue
                # a file's digest is re-used while its size and modification time (in ns)
                # stay the same: a new Sources per figure does not hash the package again.
                # Only for files last modified a while ago: a clock tick is coarser than a
                # nanosecond, so two quick edits of the same size could share a time.
                key = (path, stat.st_size, stat.st_mtime_ns)
                digest = _FILE_DIGESTS.get(key)
                if digest is None:
                    digest = hashlib.sha256(self.read(path)).digest()
                    if time.time_ns() - stat.st_mtime_ns > _SETTLED_NS:
                        _FILE_DIGESTS[key] = digest
                h.update(path.relative_to(self.project.src).as_posix().encode() + b"\0")
                h.update(digest)
        return h.hexdigest()

    def _load_index(self) -> None:
        """Take the digests and dependencies of every unit from the index of the last run
        when no file of the package changed since (a no-change check then parses nothing)."""
        if self._index_key is not None:
            return
        self._index_key = self._package_key()
        known = _INDEXES.get((self.index_path, self._index_key))
        if known is not None:  # read by an earlier Sources of this process
            self._unit_digests.update(known[0])
            self._unit_deps.update(known[1])
            self._figures = known[2]
            self._indexed = set(self._unit_deps)
            self._figures_indexed = self._figures is not None
            return
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            if data["key"] != self._index_key:
                return
            src = self.project.src
            for text, (digest, deps, files) in data["units"].items():
                unit = Unit(*text.split(":", 1))
                self._unit_digests[unit] = digest
                deps_units = frozenset(Unit(*d.split(":", 1)) for d in deps)
                self._unit_deps[unit] = deps_units, frozenset(src / f for f in files)
            figures = data.get("figures")
            self._figures = figures if isinstance(figures, list) else None
            self._indexed = set(self._unit_deps)
            self._figures_indexed = self._figures is not None
            _INDEXES[(self.index_path, self._index_key)] = (
                dict(self._unit_digests),
                dict(self._unit_deps),
                self._figures,
            )

    def save_index(self) -> None:
        """Keep the analysis of this run for the next one (best effort: a read-only checkout
        just analyses again)."""
        if self._index_key is None:
            return
        if set(self._unit_deps) <= self._indexed and (
            self._figures is None or self._figures_indexed
        ):
            return
        src = self.project.src
        units = {
            str(unit): [
                self.unit_digest(unit),
                sorted(str(d) for d in deps),
                sorted(f.relative_to(src).as_posix() for f in files),
            ]
            for unit, (deps, files) in sorted(self._unit_deps.items())
        }
        data: dict[str, Any] = {"key": self._index_key, "units": units}
        if self._figures is not None:
            data["figures"] = self._figures
        with contextlib.suppress(OSError):
            atomic_write(self.index_path, json.dumps(data, sort_keys=True).encode())
        self._indexed = set(self._unit_deps)
        self._figures_indexed = self._figures is not None

    def indexed_figures(self) -> list[FigureInfo] | None:
        """The ``@figure`` declarations the index holds for exactly these files, or None."""
        self._load_index()
        if self._figures is None:
            return None
        src = self.project.src
        with contextlib.suppress(ValueError, TypeError, SyntaxError):
            return [
                FigureInfo(name, chapter, ast.literal_eval(params), module, function,
                           src / path, line, group)
                for name, chapter, params, module, function, path, line, group in self._figures
            ]  # fmt: skip
        return None

    def remember_figures(self, figures: Iterable[FigureInfo]) -> None:
        """Keep the declarations `discover` read, for the index (see `save_index`)."""
        self._load_index()
        src = self.project.src
        self._figures = [
            [f.name, f.chapter, repr(f.params), f.module, f.function,
             f.path.relative_to(src).as_posix(), f.line, f.group]
            for f in figures
        ]  # fmt: skip
        self._figures_indexed = False

    def read(self, path: Path) -> bytes:
        if path not in self._bytes:
            self._bytes[path] = path.read_bytes()
        return self._bytes[path]

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
        if module not in self._files:
            self._files[module] = self._find_module_file(module)
        return self._files[module]

    def _find_module_file(self, module: str) -> Path | None:
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

    def symbols(self, module: str) -> ModuleSymbols | None:
        """The top-level names of a package module (None: there is no such module)."""
        if module not in self._symbols:
            path = self.module_file(module)
            self._symbols[module] = (
                None
                if path is None
                else module_symbols(
                    module, self.tree(path), is_package=path.name == "__init__.py", package=PACKAGE
                )
            )
        return self._symbols[module]

    def load_imports(self, module: str, function: str | None = None) -> frozenset[str]:
        """Top-level names of the outside packages ``module`` imports as it loads (see
        `block4.code_closure.load_time`), and those ``function`` and the code it uses import."""
        found, done, todo = set[str](), set[str](), [module]
        used = self.closure([Unit(module, function)]) if function is not None else {}
        for unit in (Unit(*key.split(":", 1)) for key in used if ":" in key):
            if unit.name != TOP_LEVEL:  # a module's top level: followed as it loads, below
                nodes = (n for stmt in self._nodes(unit) for n in ast.walk(stmt))
                todo += imported_names(nodes, unit.module, self._is_package(unit.module))
        while todo:
            name = todo.pop()
            if name.partition(".")[0] != PACKAGE:
                found.add(name.partition(".")[0])
                continue
            if self.module_file(name) is None:  # ``from block4.x import name``: block4.x
                name = name.rpartition(".")[0]
            if name in done or self.module_file(name) is None:
                continue
            done.add(name)
            parts = name.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
            statements = load_time(self.tree(self.module_file(name)).body)  # type: ignore[arg-type]
            todo += imported_names(statements, name, self._is_package(name))
        return frozenset(found)

    def _is_package(self, module: str) -> bool:
        return (self.module_file(module) or Path()).name == "__init__.py"

    def _nodes(self, unit: Unit) -> list[ast.stmt]:
        symbols = self.symbols(unit.module)
        if symbols is None:
            return []
        if unit.name == WHOLE:
            return list(self.tree(self.module_file(unit.module)).body)  # type: ignore[arg-type]
        if unit.name == TOP_LEVEL:
            return symbols.top_level
        return list(dict.fromkeys(symbols.definitions.get(unit.name, [])))

    def unit_digest(self, unit: Unit) -> str:
        """sha256 of what a unit's code *does* (docstrings, comments and layout left out)."""
        self._load_index()
        if unit not in self._unit_digests:
            body = ast.Module(body=self._nodes(unit), type_ignores=[])
            self._unit_digests[unit] = hashlib.sha256(code_signature(body).encode()).hexdigest()
        return self._unit_digests[unit]

    def unit_dependencies(self, unit: Unit) -> tuple[frozenset[Unit], frozenset[Path]]:
        """The units a unit uses directly and the data files it names."""
        self._load_index()
        if unit not in self._unit_deps:
            nodes = self._nodes(unit)
            found, strings = references(unit, list(nodes), self.symbols, package=PACKAGE)
            parts = unit.module.split(".")
            # importing a module runs its top-level code and that of every package above it
            found |= {Unit(".".join(parts[:i]), TOP_LEVEL) for i in range(1, len(parts) + 1)}
            if unit.name in (TOP_LEVEL, WHOLE):
                symbols = self.symbols(unit.module)
                for binding in symbols.imports.values() if symbols else ():
                    for module in (binding.module, f"{binding.module}.{binding.attr}"):
                        if self.symbols(module) is not None:
                            found.add(Unit(module, TOP_LEVEL))
            found = {u for u in found if self.symbols(u.module) is not None}
            found.discard(unit)
            data_files = self.data_files()
            data = {
                path
                for text in strings
                if "\n" not in text
                for path in data_files.get(text.rsplit("/", 1)[-1], ())
            }
            self._unit_deps[unit] = frozenset(found), frozenset(data)
        return self._unit_deps[unit]

    def closure(self, roots: Iterable[Unit]) -> dict[str, str]:
        """Every unit ``roots`` use, transitively, and every data file they name, with their
        sha256: ``{"block4.x:name": digest, "block4/data/f.csv": digest}``."""
        seen: set[Unit] = set()
        files: set[Path] = set()
        todo = list(roots)
        while todo:
            unit = todo.pop()
            if unit in seen or self.module_file(unit.module) is None:
                continue
            seen.add(unit)
            units, data = self.unit_dependencies(unit)
            files |= data
            todo.extend(units - seen)
        result = {str(u): self.unit_digest(u) for u in seen}
        for path in files:
            rel = path.relative_to(self.project.src).as_posix()
            result[rel] = hashlib.sha256(self.read(path)).hexdigest()
        return dict(sorted(result.items()))

    def script_closure(self, path: Path) -> dict[str, str]:
        """What a script outside the package (a companion notebook in ``py:percent`` form)
        uses of the package: the units its names resolve to, the top-level code of the
        modules it imports and the data files it names, transitively (see `closure`).
        """
        tree = self.tree(path)
        script = "__script__"
        symbols = module_symbols(script, tree, is_package=False, package=PACKAGE)

        def lookup(module: str) -> ModuleSymbols | None:
            return symbols if module == script else self.symbols(module)

        found, strings = references(Unit(script, WHOLE), list(tree.body), lookup, package=PACKAGE)
        for stmt in ast.walk(tree):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for name in (a.name for a in stmt.names):
                    base = getattr(stmt, "module", None) or ""
                    for module in (name, base, f"{base}.{name}"):
                        parts = module.split(".")
                        found |= {
                            Unit(".".join(parts[:i]), TOP_LEVEL) for i in range(1, len(parts) + 1)
                        }
        roots = {u for u in found if u.module != script and self.module_file(u.module)}
        result = self.closure(roots)
        for text in strings:
            for data in self.data_files().get(text.rsplit("/", 1)[-1], ()):
                rel = data.relative_to(self.project.src).as_posix()
                result[rel] = hashlib.sha256(self.read(data)).hexdigest()
        return dict(sorted(result.items()))

    def figure_closure(self, module: str, function: str) -> dict[str, str]:
        """What a figure function depends on: its own code, what it uses, the figure
        context and the plot style the pipeline runs it with (see `closure`)."""
        roots = [Unit(module, function), Unit(CONTEXT_MODULE, "FigureContext")]
        roots.append(Unit(STYLE_MODULE, WHOLE))
        return self.closure(roots)


def _literal(node: ast.AST, what: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PipelineError(
            f"{where}: {what} of @figure must be a literal (a string, number, or a "
            "list/dict of literals) so the pipeline can read it without importing the module"
        ) from None


_INDENTED_DECORATOR = re.compile(rb"^[ \t]+@", re.MULTILINE)


def _is_figure_decorator(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "figure") or (
        isinstance(func, ast.Attribute) and func.attr == "figure"
    )


def _read_mark(dec: ast.Call, where: str) -> FigureMark:
    """The arguments of one ``@figure(...)`` read from the source and checked."""
    kwargs = {kw.arg: kw.value for kw in dec.keywords if kw.arg}
    if dec.args:
        name = _literal(dec.args[0], "the name", where)
    elif "name" in kwargs:
        name = _literal(kwargs["name"], "the name", where)
    else:
        raise PipelineError(f"{where}: @figure needs a name as first argument")
    if "chapter" not in kwargs:
        raise PipelineError(f"{where}: @figure({name!r}) needs chapter=...")
    values = {
        key: _literal(kwargs[key], key, where)
        for key in ("chapter", "params", "group")
        if key in kwargs
    }
    try:
        return figure_mark_of(name, **values)
    except ValueError as err:
        raise PipelineError(f"{where}: {err}") from None


def discover(project: Project, *, sources: Sources | None = None) -> dict[str, FigureInfo]:
    """Find every ``@figure`` in ``block4/figures/*.py`` by reading the source.

    Returns:
        The figures by name, sorted by module and line.

    Raises:
        PipelineError: a decorator with non-literal arguments, a bad or duplicate name, or a
            module that does not parse.
    """
    sources = sources or Sources(project)
    found: dict[str, FigureInfo] = {}
    if not project.figures_dir.is_dir():
        return found
    indexed = sources.indexed_figures()  # the package has not changed since they were read
    if indexed is not None:
        return {info.name: info for info in indexed}
    for path in sorted(project.figures_dir.glob("*.py")):
        module = f"{PACKAGE}.figures.{path.stem}" if path.stem != "__init__" else ""
        if not module:
            continue
        tree = sources.tree(path)
        top_level = {id(node) for node in tree.body}
        # @figure decorates top-level functions; the whole tree is searched only when an
        # indented decorator line may be one elsewhere (then it is an error, named below)
        nested = _INDENTED_DECORATOR.search(sources.read(path)) is not None
        for node in ast.walk(tree) if nested else tree.body:
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
                mark = _read_mark(dec, where)
                name = mark.name
                if name in found:
                    other = found[name]
                    raise PipelineError(
                        f"figure {name!r} is defined twice: "
                        f"{project.relative(other.path)}:{other.line} and {where}"
                    )
                found[name] = FigureInfo(
                    name=name,
                    chapter=mark.chapter,
                    params=mark.params,
                    module=module,
                    function=node.name,
                    path=path,
                    line=node.lineno,
                    group=mark.group,
                )
    sources.remember_figures(found.values())
    return found
