"""``mkdocs serve``'s edit loop: a figure re-drawn after an edit is on the page in seconds.

MkDocs rebuilds the whole site after every change (for this site about 15 s, most of
it the API reference and the search index) and the browsers reload only after that. After an
edit of the package that leaves the figures' numbers as they were, a plotting change, only
the pictures differ. `EditLoop` wraps the server's builder:

1. When only Python files under ``src/`` changed, the stale figures are re-made first, each at
   the profile it was made with (training results come from the results cache), in the warm
   process of `block4.warm_figures`. If every one succeeded with the numbers it had, its
   SVGs are copied into the served site and the builder returns: the browsers reload and show
   them.
2. The full build follows `DEFER_S` seconds later (the reference pages show the source
   code; a provenance line says when a figure was made). The delay lets the browsers load the
   page first: while MkDocs builds, it answers no request.

Anything else (a page or the configuration edited, numbers that changed, a figure that
failed, a new figure) is an ordinary full build. Figures that the build itself re-makes are
remembered, so writing them does not start yet another build.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from block4 import pipeline
from block4.warm_figures import WarmFigures

__all__ = [
    "DEFER_S",
    "QUIET_S",
    "EditLoop",
    "close_all",
    "current",
    "install",
    "remake_stale",
    "warm_for",
]

log = logging.getLogger("mkdocs.hooks.block4")

#: Seconds between showing re-drawn figures and the full build that follows.
DEFER_S = 2.0

Snapshot = dict[str, tuple[int, int]]


def scan(paths: Iterable[Path]) -> Snapshot:
    """Modification time and size of every file under ``paths`` (caches left out)."""
    found: Snapshot = {}
    for base in paths:
        for path in [base] if base.is_file() else base.rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            found[str(path)] = (st.st_mtime_ns, st.st_size)
    return found


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    """The files added, removed or modified between two snapshots."""
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def remake_stale(
    project: pipeline.Project,
    warm: WarmFigures,
    stale: list[pipeline.FigureStatus] | None = None,
) -> list[str]:
    """Re-make every stale or missing figure (``stale``: these, already found), each at the
    profile it was made with (new ones and ``smoke`` ones: quick, as ``make_figures.py``
    does without ``--profile``), saying which and why; the names of those that failed."""
    if stale is None:
        try:
            stale = [s for s in pipeline.stale_figures(project) if s.state != "orphan"]
        except pipeline.PipelineError as err:
            log.warning("block4 figures: %s", err)
            return []
    for st in stale:
        made = (st.entry or {}).get("profile")
        rank = pipeline.PROFILE_RANK
        profile = made if rank.get(made, -1) >= rank["quick"] else "quick"
        log.info("block4: re-making figure %s (%s; %s profile)", st.name, st.reason, profile)
    if not stale:
        return []
    names = [st.name for st in stale]
    # no --profile: each figure is re-made at the profile it was made with
    args = ["--only", *names, "--out-dir", str(project.out_dir), "--no-progress", "--jobs", "auto"]
    if warm.run(args) == 0:
        return []
    log.warning("block4: re-making figures failed: %s", ", ".join(names))
    entries = pipeline.load_manifest(project)["figures"]
    return [
        st.name
        for st in stale
        if (entries.get(st.name) or {}).get("fingerprint") == (st.entry or {}).get("fingerprint")
    ]


#: Seconds after a write of its own in which the loop ignores a rebuild with nothing new.
QUIET_S = 2.0


@dataclass
class EditLoop:
    """Decides, before each rebuild of ``mkdocs serve``, whether re-drawn figures can be shown
    at once (see the module). ``site_dir`` is the folder the server serves; ``watched`` are
    the files whose changes the server rebuilds for, ``stamp`` among them: touching it asks
    for the deferred full build."""

    project: pipeline.Project
    docs_dir: Path
    site_dir: Path
    watched: list[Path]
    stamp: Path
    warm: WarmFigures
    seen: Snapshot = field(default_factory=dict)
    #: until then, a rebuild with nothing new was asked for by files this loop wrote itself
    quiet_until: float = 0.0

    def snapshot(self) -> None:
        self.seen = scan(self.watched)

    def wrap(self, build: Callable[[], Any]) -> Callable[[], Any]:
        """The server's new builder: the quick path when it applies, else ``build``."""

        def builder() -> Any:
            if self.before_build():
                return None
            return build()

        return builder

    def before_build(self) -> bool:
        """True when this rebuild is handled without a full build."""
        new = changed(self.seen, scan(self.watched))
        if not new and time.monotonic() < self.quiet_until:
            return True
        src = self.project.root / "src"
        if new and all(_is_python_under(name, src) for name in new) and self.show_redrawn():
            self.snapshot()  # the edit and the figures just written
            self.quiet_until = time.monotonic() + DEFER_S
            timer = threading.Timer(DEFER_S, self._ask_for_full_build)
            timer.daemon = True
            timer.start()
            return True
        self.snapshot()  # what the full build reads (figures re-made above included)
        self.quiet_until = 0.0
        return False

    def remake(self) -> list[str]:
        """`remake_stale` during a build: the files it writes do not call for another."""
        before = scan([self.project.out_dir])
        failed = remake_stale(self.project, self.warm)
        written = scan([self.project.out_dir])
        if changed(before, written):
            self.seen.update(written)
            self.quiet_until = time.monotonic() + QUIET_S
        return failed

    def show_redrawn(self) -> bool:
        """Re-make the stale figures; copy them into the served site if their numbers held."""
        try:
            stale = [s for s in pipeline.stale_figures(self.project) if s.state != "orphan"]
            target = self.site_dir / self.project.out_dir.relative_to(self.docs_dir)
        except (pipeline.PipelineError, ValueError):
            return False
        if not stale or any(s.entry is None for s in stale):
            return False
        if remake_stale(self.project, self.warm, stale):
            return False
        entries = pipeline.load_manifest(self.project)["figures"]
        made = [entries.get(s.name) for s in stale]
        if any(
            m is None or m.get("numbers") != s.entry.get("numbers")
            for m, s in zip(made, stale, strict=True)
        ):
            log.info("block4: the figures' numbers changed; the pages are rebuilt with them")
            return False
        target.mkdir(parents=True, exist_ok=True)
        for m in made:
            for file in (m.get("files") or {}).values():
                shutil.copyfile(self.project.out_dir / file, target / file)
        names = ", ".join(s.name for s in stale)
        log.info("block4: showing the re-drawn %s now; the full rebuild follows", names)
        return True

    def _ask_for_full_build(self) -> None:
        self.stamp.parent.mkdir(parents=True, exist_ok=True)
        self.stamp.touch()


def _is_python_under(name: str, folder: Path) -> bool:
    path = Path(name)
    return path.suffix == ".py" and folder in path.parents


# One warm helper per checkout and one loop per server, kept across the builds of
# ``mkdocs serve`` (MkDocs re-reads the hooks, not this module, for every build).
_WARM: dict[Path, WarmFigures] = {}
_LOOP: list[EditLoop] = []


def warm_for(root: Path) -> WarmFigures:
    """The warm helper of checkout ``root``, started (in the background) if it is not."""
    root = Path(root).resolve()
    warm = _WARM.get(root)
    if warm is None:
        warm = _WARM[root] = WarmFigures(root)
    warm.start()
    return warm


def current() -> EditLoop | None:
    """The loop of the running server, if one was installed."""
    return _LOOP[-1] if _LOOP else None


def install(
    server: Any,
    project: pipeline.Project,
    docs_dir: Path,
    config_file: Path | None,
    also: Sequence[Path] = (),
) -> EditLoop:
    """Wrap ``server``'s builder in an `EditLoop` (once per server). ``also``: other
    files the server rebuilds for (a stamp of the background notebook run, say)."""
    root = project.root
    stamp = root / ".cache" / "serve" / "rebuild"
    watched = [root / "src", Path(docs_dir).resolve(), stamp, *map(Path, also)]
    loop = EditLoop(
        project=project,
        docs_dir=Path(docs_dir).resolve(),
        site_dir=Path(server.root),
        watched=watched + ([Path(config_file)] if config_file else []),
        stamp=stamp,
        warm=warm_for(root),
    )
    loop.snapshot()
    loop.stamp.parent.mkdir(parents=True, exist_ok=True)
    server.watch(str(loop.stamp.parent))
    server.builder = loop.wrap(server.builder)
    _LOOP[:] = [loop]
    return loop


def close_all() -> None:
    """End every warm helper (the server is shutting down)."""
    for warm in _WARM.values():
        warm.close()
    _WARM.clear()
    _LOOP.clear()
