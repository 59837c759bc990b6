"""MkDocs hooks that keep the site's figures, numbers and notebooks in step with the code.

Wired in ``mkdocs.yml`` as ``hooks: [src/block4/docs_hooks.py]``; the rendering itself is
`block4.site_render`, the freshness contract `block4.pipeline`. On every page:

* ``![Alt text](figures/NAME.svg "Caption.")`` on a line of its own becomes a ``<figure>``
  with the light and the dark SVG, the caption and a provenance line; ``{{ NAME.key }}`` and
  ``{{ NAME.key:FORMAT }}`` become the numbers figure ``NAME`` recorded. An unknown figure or
  key stops the build; code is left alone.
* A page that shows a stale or missing figure (or quotes its numbers) logs a warning naming
  the figure, why it is stale and the command that refreshes it, so ``mkdocs build --strict``
  fails. ``mkdocs serve`` re-makes the stale figures (each at the profile it was made with)
  before each build and says which, and which function changed.
* Each companion notebook (mkdocs-jupyter) is cached under a key made of its own text and the
  code signatures of the ``block4`` names it uses, the same function-level analysis as figure
  fingerprints: only notebooks that use changed code run again, and the log says why.
* ``mkdocs serve`` does not wait for notebooks: one whose outputs are not cached is shown
  without outputs, under a note that says they are being computed, while
  `block4.notebook_runner` executes it in the background; the page fills in (the browser
  reloads) when it is done. ``BLOCK4_DEFER_NOTEBOOKS=0`` makes ``serve`` execute them before it
  serves, as ``mkdocs build`` always does.

The package must be importable as this checkout's ``src/block4`` (``pip install -e .`` or
``PYTHONPATH=src``); the hook stops the build with that advice when another copy is imported.
"""

from __future__ import annotations

import glob
import hashlib
import html
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority

from block4 import notebook_runner, pipeline, serve_loop, site_render

log = logging.getLogger("mkdocs.hooks.block4")

# MkDocs loads a fresh copy of this module with every configuration it reads (``serve``
# re-reads it on each rebuild), but calls ``on_startup`` only once: keep the command here.
_COMMAND_ENV = "BLOCK4_MKDOCS_COMMAND"

NOTEBOOK_CACHE = Path(".cache") / "mkdocs-jupyter"
"""Where executed notebooks are cached, one folder per notebook and code version."""

#: Touched by the background notebook run after each notebook; ``mkdocs serve`` watches it.
NOTEBOOK_STAMP = Path(".cache") / "notebooks-executed" / "stamp"

_DEFER_ENV = "BLOCK4_DEFER_NOTEBOOKS"


@dataclass
class _Build:
    """What one build knows: the checkout, the figures' status, warnings given so far."""

    project: pipeline.Project | None = None
    site: site_render.Site = field(default_factory=site_render.Site)
    status: dict[str, pipeline.FigureStatus] = field(default_factory=dict)
    warned: set[tuple[str, str]] = field(default_factory=set)
    sources: pipeline.Sources | None = None
    notebook_dirs: set[Path] = field(default_factory=set)
    #: notebooks shown without outputs in this build, by page, with their job and any error
    deferred: dict[str, tuple[notebook_runner.Job, str | None]] = field(default_factory=dict)


_state = _Build()


def on_startup(command: str, dirty: bool) -> None:
    os.environ[_COMMAND_ENV] = command


def _serving() -> bool:
    return os.environ.get(_COMMAND_ENV) == "serve"


def defer_notebooks() -> bool:
    """Whether this build shows uncached notebooks at once and executes them in the background:
    ``mkdocs serve`` unless ``BLOCK4_DEFER_NOTEBOOKS=0``; never ``mkdocs build``."""
    value = os.environ.get(_DEFER_ENV, "1")
    if value not in ("0", "1"):
        raise PluginError(
            f"block4: {_DEFER_ENV}={value!r} is not allowed; use 1 (mkdocs serve shows notebooks "
            "at once and executes them in the background, the default) or 0 (it executes them "
            "before serving)"
        )
    return _serving() and value == "1"


def _check_package(root: Path) -> None:
    """The hook file and the ``block4`` it imports must be the same checkout."""
    hook_src = Path(__file__).resolve().parents[1]
    imported = Path(pipeline.__file__).resolve().parents[1]
    if hook_src != imported:
        raise PluginError(
            f"block4: the site in {root} runs its hooks from {hook_src}, but Python imports "
            f"block4 from {imported}; install this checkout (pip install -e .) or run with "
            f"PYTHONPATH={hook_src}"
        )


def on_config(config: Any) -> Any:
    root = Path(config.config_file_path).resolve().parent
    _check_package(root)
    _state.project = pipeline.Project(root, out_dir=Path(config.docs_dir) / "figures")
    edit_uri = config.edit_uri or ""
    match = re.match(r"(?:edit|blob|tree)/([^/]+)/", edit_uri)
    _state.site = site_render.Site(
        repo_url=(config.repo_url or "").rstrip("/"), branch=match.group(1) if match else "main"
    )
    return config


def on_pre_build(config: Any) -> None:
    project = _state.project
    assert project is not None
    _state.warned = set()
    _state.notebook_dirs = set()
    _state.deferred = {}
    if _serving():
        _refresh_stale(project)
    _state.sources = pipeline.Sources(project)
    try:
        _state.status = pipeline.figure_status(project, sources=_state.sources)
    except pipeline.PipelineError as err:
        raise PluginError(f"block4 figures: {err}") from None


def _refresh_stale(project: pipeline.Project) -> None:
    """``mkdocs serve``: re-make the stale figures (each at the profile it was made with, in
    the warm helper process), saying which and why."""
    loop = serve_loop.current()
    if loop is not None and loop.project.root == project.root:
        loop.remake()
    else:
        serve_loop.remake_stale(project, serve_loop.warm_for(project.root))


# -- notebooks --------------------------------------------------------------------------------


def notebook_key(sources: pipeline.Sources, path: Path) -> tuple[str, dict[str, str]]:
    """A notebook's cache key: its own text plus the code signatures of every ``block4``
    name it uses (transitively); also those signatures, to say later what changed."""
    deps = sources.script_closure(path)
    h = hashlib.sha256(sources.read(path))
    h.update(json.dumps(deps, sort_keys=True).encode())
    return h.hexdigest()[:16], deps


def _why_rerun(folder: Path, deps: dict[str, str]) -> str:
    """What changed since the newest other cache of the same notebook."""
    stem = folder.name.rsplit("-", 1)[0]
    older = [
        p for p in folder.parent.glob(f"{stem}-*") if p != folder and (p / "deps.json").is_file()
    ]
    if not older:
        return "not executed before"
    previous = max(older, key=lambda p: p.stat().st_mtime)
    try:
        before = json.loads((previous / "deps.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its earlier cache is unreadable"
    changed = sorted(k for k in set(deps) | set(before) if deps.get(k) != before.get(k))
    return (
        f"changed: {', '.join(changed[:4])}"
        + (f" (+{len(changed) - 4} more)" if len(changed) > 4 else "")
        if changed
        else "its own text changed"
    )


@event_priority(100)  # before mkdocs-jupyter reads its cache folder for this page
def on_pre_page(page: Any, config: Any, files: Any) -> Any:
    plugin = config.plugins.get("mkdocs-jupyter")
    project, sources = _state.project, _state.sources
    if plugin is None or not plugin.config.get("cache", False) or project is None:
        return page
    path = Path(page.file.abs_src_path)
    if sources is None or path.suffix != ".py" or not plugin.should_include(page.file):
        return page
    try:
        key, deps = notebook_key(sources, path)
    except pipeline.PipelineError as err:
        raise PluginError(f"block4: notebook {page.file.src_uri}: {err}") from None
    folder = project.root / NOTEBOOK_CACHE / f"{path.stem}-{key}"
    if not folder.is_dir():
        log.info("block4: notebook %s runs again (%s)", path.name, _why_rerun(folder, deps))
        folder.mkdir(parents=True, exist_ok=True)  # another build may make it meanwhile
        pipeline.atomic_write(folder / "deps.json", json.dumps(deps, indent=1).encode())
    plugin.config["cache_dir"] = str(folder)
    _state.notebook_dirs.add(folder)
    if defer_notebooks():
        _defer_if_uncached(plugin, page, path, folder)
    return page


def _defer_if_uncached(plugin: Any, page: Any, path: Path, folder: Path) -> None:
    """Serve: a notebook without cached outputs is rendered unexecuted now, run in the
    background after the build (or shown with its error, if this version of it failed)."""
    job = notebook_runner.job_for(path, folder, plugin.config)
    if job is None or Path(job.cache_file).is_file():
        return
    _state.deferred[page.file.src_uri] = (job, notebook_runner.failure(job))
    # The plugin reads this when its own on_pre_page (after this one) handles the page, and
    # the configuration is read afresh for every build: only this page, only this build.
    ignore = list(plugin.config.get("execute_ignore") or [])
    plugin.config["execute_ignore"] = [*ignore, glob.escape(str(path))]


def _pending_note(error: str | None) -> str:
    if error is not None:
        return (
            '<div class="admonition failure block4-notebook-failed" role="status">\n'
            '<p class="admonition-title">Running this notebook failed</p>\n'
            f"<p>It is shown without outputs. The error: <code>{html.escape(error)}</code>; "
            "the terminal running the server shows all of it. Save a fix to the notebook or "
            "to the code it uses (or restart the server), and it runs again.</p>\n</div>\n"
        )
    return (
        '<div class="admonition info block4-notebook-pending" role="status">\n'
        '<p class="admonition-title">Outputs are being computed</p>\n'
        "<p>This notebook is shown without its outputs: the server is executing it in the "
        "background, and this page reloads by itself when they are ready. "
        "(<code>mkdocs build</code> executes every notebook before it shows it.)</p>\n</div>\n"
    )


# -- pages ------------------------------------------------------------------------------------


def _warn_if_stale(name: str, page: str) -> None:
    st = _state.status.get(name)
    if st is None or st.fresh or (name, page) in _state.warned:
        return
    _state.warned.add((name, page))
    log.warning(
        "block4: figure '%s' used on %s is %s (%s); refresh it with: %s",
        name,
        page,
        st.state,
        st.reason,
        pipeline.refresh_command([name]),
    )


def _warn_inline(name: str, page: str) -> None:
    if name not in _state.status:
        return
    _warn_if_stale(name, page)
    if (name, page + "#inline") not in _state.warned:
        _state.warned.add((name, page + "#inline"))
        log.warning(
            "block4: figure '%s' on %s is not on a line of its own, so it gets no caption, "
            'provenance or dark variant; write ![alt](figures/%s.svg "Caption.") alone on a line',
            name,
            page,
            name,
        )


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    page_path = page.file.src_uri
    text, report = site_render.render_page(markdown, _state.status, _state.site)
    for name in report.used:
        _warn_if_stale(name, page_path)
    for name in report.inline:
        _warn_inline(name, page_path)
    if report.problems:
        unique = list(dict.fromkeys(report.problems))
        raise PluginError(f"block4: {page_path}: " + "; ".join(unique) + " (see docs/reproduce.md)")
    return text


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    deferred = _state.deferred.get(page.file.src_uri) if _state.deferred else None
    if deferred is not None:
        html_text = _pending_note(deferred[1]) + html_text
    return site_render.unwrap_figures(html_text)


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    project = _state.project
    if project is not None:
        # a re-drawn figure is shown at once, the full rebuild follows (see serve_loop)
        config_file = Path(config.config_file_path) if config.config_file_path else None
        also = [project.root / NOTEBOOK_STAMP]
        serve_loop.install(server, project, Path(config.docs_dir), config_file, also)
    if project is not None and defer_notebooks():
        stamp = project.root / NOTEBOOK_STAMP
        stamp.parent.mkdir(parents=True, exist_ok=True)
        server.watch(str(stamp.parent))  # a finished background notebook: rebuild, reload
    return server


def on_shutdown() -> None:
    notebook_runner.stop()
    serve_loop.close_all()


def _run_deferred(project: pipeline.Project) -> None:
    """After a serve build: execute the notebooks it showed without outputs, in the background."""
    jobs = [job for job, error in _state.deferred.values() if error is None]
    started = notebook_runner.ensure(jobs, project.root / NOTEBOOK_STAMP)
    if started:
        names = ", ".join(job.name for job in jobs)
        log.info(
            "block4: serving now; %d notebook(s) execute in the background and their pages "
            "fill in when done: %s",
            len(jobs),
            names,
        )


@event_priority(100)  # before mkdocs-jupyter's, which empties the cache folder it was given last
def on_post_build(config: Any) -> None:
    project = _state.project
    plugin = config.plugins.get("mkdocs-jupyter")
    if project is not None and plugin is not None and _state.notebook_dirs:
        # mkdocs-jupyter deletes every *.json in its cache folder that this build did not read:
        # in the last notebook's folder, its code signatures and an entry the background run
        # wrote meanwhile. The folders of old versions are removed below instead.
        plugin.config["cache_dir"] = str(project.root / NOTEBOOK_CACHE)
    if project is not None and defer_notebooks():
        _run_deferred(project)
    if project is not None and _state.notebook_dirs:
        # caches of notebook versions this build did not use (older code, removed notebooks)
        for old in (project.root / NOTEBOOK_CACHE).glob("*"):
            if old.is_dir() and old not in _state.notebook_dirs:
                shutil.rmtree(old, ignore_errors=True)
    stale = sorted({name for name, page in _state.warned if not page.endswith("#inline")})
    if stale:
        log.warning(
            "block4: %d stale figure(s) on the site: %s; refresh all with: %s",
            len(stale),
            ", ".join(stale),
            pipeline.refresh_command(stale),
        )
