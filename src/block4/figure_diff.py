"""Which figures differ from a git revision, and how: the data behind ``block4.compare``.

`compare` reads ``docs/figures/manifest.json`` and the figure files at a git revision
(with ``git show``: offline, no server) and returns a `Comparison`: for every figure that
differs, the sources whose digest changed, the numbers before -> after, the settings that
differ and the image bytes on both sides; and the Markdown of the pages on both sides, whose
sentences `block4.prose_diff` compares. Rendering it (HTML, Markdown) and the command line
are in `block4.compare`. Nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from block4.pipeline import PipelineError, Project, load_manifest

__all__ = [
    "ROUNDING",
    "SETTINGS",
    "VARIANTS",
    "CompareError",
    "Comparison",
    "FigureChange",
    "Number",
    "NumberChange",
    "Setting",
    "SourceChange",
    "compare",
    "diff_entries",
    "is_numeric",
    "short_text",
]

#: Image variants, in the order they are shown.
VARIANTS = ("light", "dark")

#: Manifest fields shown when they differ (besides the sources and the numbers): they explain
#: why a figure was re-made, or why the same code gave other numbers.
SETTINGS = ("profile", "seed", "params", "module", "function", "chapter", "device", "cpu_threads")

Number = bool | int | float | str

#: Relative changes up to this size are marked as rounding (e.g. another summation order).
ROUNDING = 1e-9


class CompareError(PipelineError):
    """The comparison cannot be made: no git, an unknown revision, no manifest at it."""


# --------------------------------------------------------------------------------------------
# What differs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceChange:
    """One key of the manifest's ``sources`` map whose digest differs.

    Attributes:
        key: a source file (``block4/figures/likelihood.py``) or a function
            (``block4.figures.likelihood:decision_under_cost``), as the manifest names it.
        before: its digest at the revision (None: the figure did not depend on it then).
        after: its digest now (None: the figure no longer depends on it).
    """

    key: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        """``changed``, ``added`` (a new dependency) or ``removed`` (no longer used)."""
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"


@dataclass(frozen=True)
class NumberChange:
    """One number of a figure, before and after (None: absent on that side)."""

    key: str
    before: Number | None
    after: Number | None

    @property
    def changed(self) -> bool:
        # True == 1 in Python, yet a flag that became a count did change.
        kinds_differ = isinstance(self.before, bool) != isinstance(self.after, bool)
        return self.before != self.after or kinds_differ

    @property
    def negligible(self) -> bool:
        """A numeric change at the level of floating-point rounding (relative <= 1e-9)."""
        if not (self.changed and is_numeric(self.before) and is_numeric(self.after)):
            return False
        scale = max(abs(self.before), abs(self.after))  # type: ignore[arg-type]
        return abs(self.after - self.before) <= ROUNDING * scale  # type: ignore[operator]

    @property
    def relative(self) -> float | None:
        """``(after - before) / |before|`` for two numbers with ``before != 0``, else None."""
        if not (is_numeric(self.before) and is_numeric(self.after)) or self.before == 0:
            return None
        return (self.after - self.before) / abs(self.before)  # type: ignore[operator]


@dataclass(frozen=True)
class Setting:
    """A manifest field other than sources and numbers that differs (profile, seed, ...)."""

    key: str
    before: Any
    after: Any


@dataclass
class FigureChange:
    """A figure that differs from the revision.

    Attributes:
        name: the figure's name.
        status: ``changed``, ``new`` (absent at the revision) or ``removed`` (absent now).
        chapter: the chapter it belongs to.
        sources: the sources whose digest changed (empty for new and removed figures).
        numbers: every number of the figure on either side, in key order.
        settings: other manifest fields that differ (profile, seed, params, device, versions).
        before: the SVG bytes at the revision by variant (``light``, ``dark``); None where
            the file is absent.
        after: the SVG bytes now by variant; None where the file is absent.
        same_fingerprint: True when the code is the same and only the output differs (a
            library update, a non-deterministic figure or a file edited by hand).
    """

    name: str
    status: str
    chapter: str = ""
    sources: list[SourceChange] = field(default_factory=list)
    numbers: list[NumberChange] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    before: dict[str, bytes | None] = field(default_factory=dict)
    after: dict[str, bytes | None] = field(default_factory=dict)
    same_fingerprint: bool = False

    @property
    def moved(self) -> list[NumberChange]:
        """The numbers whose value differs."""
        return [n for n in self.numbers if n.changed]

    def reason(self, limit: int | None = None) -> str:
        """One line: why the figure differs (naming at most ``limit`` sources)."""
        if self.status == "new":
            return "new figure"
        if self.status == "removed":
            return "removed"
        parts = []
        if self.sources:
            shown = self.sources if limit is None else self.sources[:limit]
            more = len(self.sources) - len(shown)
            parts.append(
                ", ".join(_source_text(s) for s in shown) + (f" and {more} more" if more else "")
            )
        parts += [
            f"{s.key} {short_text(s.before)} -> {short_text(s.after)}"
            for s in self.settings
            if s.key in ("profile", "seed", "params")
        ]
        if self.same_fingerprint:
            versions = [s for s in self.settings if s.key.startswith("versions.")]
            detail = "; ".join(
                f"{s.key.split('.', 1)[1]} {short_text(s.before)} -> {short_text(s.after)}"
                for s in versions
            )
            parts.append("same code, different output" + (f" ({detail})" if detail else ""))
        return "; ".join(parts) or "fingerprint changed"


@dataclass
class Comparison:
    """The figures of the working tree against those of a git revision.

    Attributes:
        rev: the revision as given (``main``, ``HEAD~1``, ``origin/main``).
        commit: the commit it names (full hash).
        figures_dir: the figures directory, relative to the repository root.
        changes: the figures that differ: changed, then new, then removed, by name.
        unchanged: how many figures are the same on both sides.
        formats: the manifest format at the revision and now; when they differ, the
            fingerprint recipe changed, so every figure's digests may differ.
        pages: the Markdown of every page of the docs directory (``docs_dir`` of
            ``mkdocs.yml``) at the revision and now, by path relative to that directory;
            ``None`` on the side where a page does not exist.
        entries: the manifest's figure entries at the revision and now (what the pages'
            number placeholders are filled from).
    """

    rev: str
    commit: str
    figures_dir: str
    changes: list[FigureChange]
    unchanged: int
    formats: tuple[Any, Any] = (None, None)
    pages: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    entries: tuple[dict[str, Any], dict[str, Any]] = field(default_factory=lambda: ({}, {}))

    def format_note(self) -> str:
        """A sentence when the fingerprint recipe changed between the two sides, else ''."""
        before, after = self.formats
        if before == after:
            return ""
        return (
            f"The fingerprint recipe changed (manifest format {before} -> {after}): digests "
            "are computed differently, so sources may be listed although their code is the same."
        )

    def by_status(self, status: str) -> list[FigureChange]:
        return [c for c in self.changes if c.status == status]

    def headline(self) -> str:
        """One line: how many figures differ from the revision, and how."""
        against = f"{self.rev} ({self.commit[:10]})"
        if not self.changes:
            return f"no figure differs from {against}; {self.unchanged} unchanged"
        counts = ", ".join(
            f"{len(self.by_status(s))} {s}"
            for s in ("changed", "new", "removed")
            if self.by_status(s)
        )
        n = len(self.changes)
        return (
            f"{n} figure{'s' if n != 1 else ''} differ{'s' if n == 1 else ''} from {against}: "
            f"{counts}; {self.unchanged} unchanged"
        )


def is_numeric(value: Any) -> bool:
    """True for an int or float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _digests_differ(before: str, after: str) -> bool:
    # Digests may be stored at different lengths (a short prefix, or the whole sha256).
    n = min(len(before), len(after))
    return before[:n] != after[:n] or (n == 0 and before != after)


def _source_text(change: SourceChange) -> str:
    if change.kind == "added":
        return f"{change.key} (new dependency)"
    if change.kind == "removed":
        return f"{change.key} (no longer used)"
    return change.key


def short_text(value: Any) -> str:
    """``value`` in one line: JSON for lists and dicts, ``(none)`` for None."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "(none)" if value is None else str(value)


def diff_entries(
    name: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> FigureChange | None:
    """What differs between two manifest entries of figure ``name`` (images not read).

    Args:
        name: the figure's name.
        old: its entry at the revision, or None when it did not exist there.
        new: its entry now, or None when it has been removed.

    Returns:
        The change, or None when the fingerprint, the numbers and the image digests are all
        the same (a figure re-made with the same result is not a change).
    """
    if old is None and new is None:
        return None
    old_e, new_e = old or {}, new or {}
    status = "new" if old is None else "removed" if new is None else "changed"
    old_numbers: dict[str, Any] = old_e.get("numbers") or {}
    new_numbers: dict[str, Any] = new_e.get("numbers") or {}
    numbers = [
        NumberChange(key, old_numbers.get(key), new_numbers.get(key))
        for key in sorted(set(old_numbers) | set(new_numbers))
    ]
    change = FigureChange(
        name=name, status=status, chapter=str(new_e.get("chapter") or old_e.get("chapter") or "")
    )
    change.numbers = numbers
    if status != "changed":
        return change
    same_fingerprint = old_e.get("fingerprint") == new_e.get("fingerprint")
    same_numbers = not any(n.changed for n in numbers)
    same_files = old_e.get("sha256") == new_e.get("sha256") and old_e.get("files") == new_e.get(
        "files"
    )
    if same_fingerprint and same_numbers and same_files:
        return None
    old_sources: dict[str, str] = old_e.get("sources") or {}
    new_sources: dict[str, str] = new_e.get("sources") or {}
    change.sources = [
        SourceChange(key, old_sources.get(key), new_sources.get(key))
        for key in sorted(set(old_sources) | set(new_sources))
        if key not in old_sources
        or key not in new_sources
        or _digests_differ(str(old_sources[key]), str(new_sources[key]))
    ]
    settings = [
        Setting(key, old_e.get(key), new_e.get(key))
        for key in SETTINGS
        if old_e.get(key) != new_e.get(key)
    ]
    old_versions: dict[str, Any] = old_e.get("versions") or {}
    new_versions: dict[str, Any] = new_e.get("versions") or {}
    settings += [
        Setting(f"versions.{lib}", old_versions.get(lib), new_versions.get(lib))
        for lib in sorted(set(old_versions) | set(new_versions))
        if old_versions.get(lib) != new_versions.get(lib)
    ]
    change.settings = settings
    change.same_fingerprint = same_fingerprint
    return change


# --------------------------------------------------------------------------------------------
# Reading the revision with git
# --------------------------------------------------------------------------------------------


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except FileNotFoundError:
        raise CompareError(
            "git is not installed; the comparison reads the figures of a revision with git show"
        ) from None
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        raise CompareError(f"git {' '.join(args)} failed: {message}")
    return proc


def _repository_root(root: Path) -> Path:
    proc = _git(root, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise CompareError(
            f"{root} is not inside a git repository; the comparison reads the figures of a "
            "revision with git show (run it in a clone of the project)"
        )
    return Path(proc.stdout.decode().strip()).resolve()


def _resolve(root: Path, rev: str) -> str:
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise CompareError(
            f"{rev!r} is not a revision; allowed: a commit, branch or tag such as HEAD, "
            "HEAD~1, main or origin/main"
        )
    proc = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise CompareError(
            f"unknown revision {rev!r}; allowed: a commit, branch or tag of this repository "
            "such as HEAD, HEAD~1, main or origin/main (a shallow clone lacks older commits "
            "and other branches: fetch them, e.g. with fetch-depth: 0 in actions/checkout)"
        )
    return proc.stdout.decode().strip()


def _show(repo: Path, commit: str, path: str) -> bytes | None:
    """The bytes of ``path`` (relative to the repository root) at ``commit``, or None."""
    spec = f"{commit}:{path}"
    if _git(repo, "cat-file", "-e", spec, check=False).returncode != 0:
        return None
    return _git(repo, "show", spec).stdout


def _figures_dir_in_repo(project: Project, repo: Path) -> PurePosixPath:
    """Where the project's figures live relative to the repository root."""
    for directory in (project.out_dir, project.root / "docs" / "figures"):
        try:
            return PurePosixPath(Path(directory).resolve().relative_to(repo).as_posix())
        except ValueError:  # e.g. --out-dir outside the repository: compare with docs/figures
            continue
    raise CompareError(f"the project at {project.root} is not inside the repository {repo}")


_DOCS_DIR = re.compile(r"^docs_dir:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(?:#.*)?$", re.MULTILINE)


def _docs_dir(repo: Path, figures_dir: PurePosixPath) -> PurePosixPath:
    """The pages' directory, relative to the repository root: ``docs_dir`` of the
    ``mkdocs.yml`` at the root (``docs`` when it names none), else the figures' parent."""
    config = repo / "mkdocs.yml"
    if config.is_file():
        found = _DOCS_DIR.search(config.read_text(encoding="utf-8", errors="replace"))
        return PurePosixPath(found.group(1).strip() if found else "docs")
    return figures_dir.parent


def _page_names(listing: bytes, docs: PurePosixPath, figures_dir: PurePosixPath) -> list[str]:
    return [
        name
        for name in filter(None, listing.decode(errors="replace").split("\0"))
        if name.endswith(".md")
        and docs in PurePosixPath(name).parents
        and figures_dir not in PurePosixPath(name).parents
    ]


def _pages(repo: Path, commit: str, figures_dir: PurePosixPath) -> dict[str, Any]:
    """The Markdown pages of the docs directory at ``commit`` and in the working tree (the
    files git tracks or would track; no symbolic links), as ``{path relative to the docs
    directory: (before or None, now or None)}``."""
    docs = _docs_dir(repo, figures_dir)
    tree = _git(repo, "ls-tree", "-r", "-z", commit, "--", str(docs)).stdout
    regular = b"\0".join(  # "<mode> blob <sha>\t<path>": leave out links (mode 120000)
        entry.split(b"\t", 1)[1]
        for entry in tree.split(b"\0")
        if b"\t" in entry and not entry.startswith(b"120000")
    )
    before = {
        PurePosixPath(name).relative_to(docs).as_posix(): _git(
            repo, "show", f"{commit}:{name}"
        ).stdout.decode("utf-8", "replace")
        for name in _page_names(regular, docs, figures_dir)  # listed, so they exist
    }
    listing = _git(
        repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", str(docs)
    ).stdout
    now: dict[str, str] = {}
    for name in _page_names(listing, docs, figures_dir):
        path = repo / name
        if path.is_file() and not path.is_symlink():
            text = path.read_bytes().decode("utf-8", "replace")
            now[PurePosixPath(name).relative_to(docs).as_posix()] = text
    return {page: (before.get(page), now.get(page)) for page in sorted(set(before) | set(now))}


def compare(project: Project, rev: str) -> Comparison:
    """Compare the working tree's figures of ``project`` with those committed at ``rev``.

    The working tree side is ``project.manifest_path`` and the files next to it; the
    revision side is the same path at ``rev`` (``docs/figures`` when the project's figures
    directory lies outside the repository).

    Raises:
        CompareError: git is missing, ``project.root`` is not in a git repository, ``rev`` is
            unknown, or there is no readable manifest at ``rev`` or in the working tree.
        PipelineError: the working tree's manifest is not valid JSON.
    """
    root = project.root
    if not root.is_dir():
        raise CompareError(f"{root} is not a directory")
    repo = _repository_root(root)
    commit = _resolve(repo, rev)
    figures_dir = _figures_dir_in_repo(project, repo)
    manifest_rel = str(figures_dir / "manifest.json")
    raw = _show(repo, commit, manifest_rel)
    if raw is None:
        raise CompareError(
            f"{rev} ({commit[:10]}) has no {manifest_rel}; allowed: a revision at which the "
            "figures and their manifest were committed"
        )
    try:
        old_manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CompareError(f"{manifest_rel} at {rev} is not valid JSON ({err})") from None
    if not isinstance(old_manifest, dict) or not isinstance(old_manifest.get("figures"), dict):
        raise CompareError(f"{manifest_rel} at {rev} has no 'figures' table")
    if not project.manifest_path.is_file():
        raise CompareError(
            f"the working tree has no {project.relative(project.manifest_path)}; run the "
            "comparison from the repository root, after making the figures"
        )
    new_manifest = load_manifest(project)
    old_entries: dict[str, Any] = old_manifest["figures"]
    new_entries: dict[str, Any] = new_manifest["figures"]

    changes: list[FigureChange] = []
    unchanged = 0
    for name in sorted(set(old_entries) | set(new_entries)):
        change = diff_entries(name, old_entries.get(name), new_entries.get(name))
        if change is None:
            unchanged += 1
            continue
        old_files = (old_entries.get(name) or {}).get("files") or {}
        new_files = (new_entries.get(name) or {}).get("files") or {}
        for variant in VARIANTS:
            if name in old_entries:
                old_file = old_files.get(variant)
                change.before[variant] = (
                    _show(repo, commit, str(figures_dir / old_file)) if old_file else None
                )
            if name in new_entries:
                new_file = new_files.get(variant)
                path = project.out_dir / new_file if new_file else None
                change.after[variant] = path.read_bytes() if path and path.is_file() else None
        changes.append(change)
    order = {"changed": 0, "new": 1, "removed": 2}
    changes.sort(key=lambda c: (order[c.status], c.name))
    formats = (old_manifest.get("format"), new_manifest.get("format"))
    return Comparison(
        rev,
        commit,
        str(figures_dir),
        changes,
        unchanged,
        formats,
        pages=_pages(repo, commit, figures_dir),
        entries=(old_entries, new_entries),
    )
