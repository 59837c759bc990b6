"""MkDocs hooks that keep the site's figures and numbers in step with the code.

Wired in ``mkdocs.yml`` as ``hooks: [src/block4/docs_hooks.py]``. On every page:

* ``![Alt text](figures/NAME.svg "Caption.")`` on a line of its own becomes a ``<figure>``
  with the light and the dark SVG (mkdocs-material shows ``#only-light`` / ``#only-dark``
  images with the matching palette), the alt text, the caption and a provenance line:
  profile, device, date, short fingerprint and a link to the figure's source.
* ``{{ NAME.key }}`` and ``{{ NAME.key:FORMAT }}`` (a Python format spec, e.g. ``.3g``) are
  replaced by the number ``key`` that figure ``NAME`` recorded in ``docs/figures/manifest.json``;
  without a spec floats are shown with 4 significant digits. An unknown figure or key stops
  the build. Code blocks and inline code are left alone.
* A page that shows a stale or missing figure (or quotes its numbers) logs a warning naming
  the figure, why it is stale and the command that refreshes it, so ``mkdocs build --strict``
  fails. ``mkdocs serve`` re-makes stale figures with the quick profile before each build,
  so editing ``src/`` refreshes the figures on the open page.
* Executed notebooks (mkdocs-jupyter) are cached under a directory keyed on a hash of
  ``src/block4``, so a notebook is executed again whenever the package changes.

All the logic lives in :mod:`block4.pipeline`; this module only adapts it to MkDocs events.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# This file is loaded by path; make the checkout's own package importable first.
_SRC = Path(__file__).resolve().parents[1]
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from mkdocs.exceptions import PluginError  # noqa: E402

from block4 import pipeline  # noqa: E402

log = logging.getLogger("mkdocs.hooks.block4")

# MkDocs loads a fresh copy of this module with every configuration it reads (``serve``
# re-reads it on each rebuild), but calls ``on_startup`` only once: keep the command here.
_COMMAND_ENV = "BLOCK4_MKDOCS_COMMAND"

#: Figure references the hook turns into ``<figure>`` blocks (alone on their line).
FIGURE_RE = re.compile(
    r"^(?P<indent>[ \t]*)!\[(?P<alt>[^\]\n]*)\]\((?P<prefix>(?:\.\./)*)figures/"
    r"(?P<name>[a-z][a-z0-9_]*)\.svg(?:\s+\"(?P<caption>[^\"\n]*)\")?\)"
    r"(?P<attrs>\{[^}\n]*\})?[ \t]*$",
    re.MULTILINE,
)

#: Number placeholders: ``{{ figure.key }}`` or ``{{ figure.key:.3g }}``.
NUMBER_RE = re.compile(
    r"\{\{\s*(?P<name>[a-z][a-z0-9_]*)\.(?P<key>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?::(?P<spec>[^}]*?))?\s*\}\}"
)

# A figure referenced anywhere else (inside a sentence, say): still checked for freshness.
_INLINE_FIGURE_RE = re.compile(r"\]\((?:\.\./)*figures/(?P<name>[a-z][a-z0-9_]*)\.svg[\s\)]")

# Fenced code blocks and inline code spans: never rewritten.
_CODE_RE = re.compile(
    r"(?P<fence>^[ \t]*(?P<tick>`{3,}|~{3,})[^\n]*\n.*?^[ \t]*(?P=tick)[ \t]*$)"
    r"|(?P<inline>(?P<bt>`+)[^`\n]*?(?P=bt))",
    re.MULTILINE | re.DOTALL,
)


class _State:
    project: pipeline.Project | None = None
    status: dict[str, pipeline.FigureStatus] = {}
    repo_url: str = ""
    branch: str = "main"
    warned: set[tuple[str, str]] = set()
    cache_base: Path | None = None  # mkdocs-jupyter's cache folder for all package versions
    cache_dir: Path | None = None  # ... and the one for the package as it is now


_state = _State()


def on_startup(command: str, dirty: bool) -> None:
    os.environ[_COMMAND_ENV] = command


def _serving() -> bool:
    return os.environ.get(_COMMAND_ENV) == "serve"


def on_config(config: Any) -> Any:
    root = Path(config.config_file_path).resolve().parent
    _state.project = pipeline.Project(root, out_dir=Path(config.docs_dir) / "figures")
    _state.repo_url = (config.repo_url or "").rstrip("/")
    edit_uri = config.edit_uri or ""
    match = re.match(r"(?:edit|blob|tree)/([^/]+)/", edit_uri)
    _state.branch = match.group(1) if match else "main"
    return config


def source_hash(project: pipeline.Project) -> str:
    """A short hash of every file of the ``block4`` package (notebook cache key)."""
    h = hashlib.sha256()
    for path in sorted(project.package_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(path.relative_to(project.src).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _key_notebook_cache(config: Any, project: pipeline.Project) -> None:
    plugin = config.plugins.get("mkdocs-jupyter")
    if plugin is None or not plugin.config.get("cache", False):
        return
    base = project.root / ".cache" / "mkdocs-jupyter"
    wanted = base / f"block4-{source_hash(project)}"
    plugin.config["cache_dir"] = str(wanted)
    _state.cache_base, _state.cache_dir = base, wanted


def on_pre_build(config: Any) -> None:
    project = _state.project
    assert project is not None
    _state.warned = set()
    if _serving():
        _refresh_stale(project)
    try:
        _state.status = pipeline.figure_status(project)
    except pipeline.PipelineError as err:
        raise PluginError(f"block4 figures: {err}") from None
    _key_notebook_cache(config, project)


def _refresh_stale(project: pipeline.Project) -> None:
    try:
        stale = [s.name for s in pipeline.stale_figures(project) if s.state != "orphan"]
    except pipeline.PipelineError as err:
        log.warning("block4 figures: %s", err)
        return
    if not stale:
        return
    log.info("block4: re-making stale figures (quick profile): %s", ", ".join(stale))
    script = project.root / "scripts" / "make_figures.py"
    cmd = [sys.executable, str(script), "--only", *stale, "--profile", "quick"]
    cmd += ["--out-dir", str(project.out_dir), "--no-progress", "--jobs", "auto"]
    proc = subprocess.run(cmd, cwd=project.root, check=False)
    if proc.returncode != 0:
        log.warning("block4: re-making figures failed (exit %s): %s", proc.returncode, stale)


def _split_code(markdown: str) -> list[tuple[bool, str]]:
    """Split into ``(is_code, text)`` pieces so code is never rewritten."""
    pieces: list[tuple[bool, str]] = []
    pos = 0
    for m in _CODE_RE.finditer(markdown):
        if m.start() > pos:
            pieces.append((False, markdown[pos : m.start()]))
        pieces.append((True, m.group(0)))
        pos = m.end()
    if pos < len(markdown):
        pieces.append((False, markdown[pos:]))
    return pieces


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


def provenance(name: str, entry: dict[str, Any]) -> str:
    """The provenance line shown under a figure (HTML)."""
    date = str(entry.get("date", ""))[:10]
    parts = [
        f"{html.escape(str(entry.get('profile', '?')))} profile",
        html.escape(str(entry.get("device", "?"))),
        html.escape(date),
        f'<code title="fingerprint">{html.escape(str(entry.get("fingerprint", ""))[:8])}</code>',
    ]
    source = entry.get("source")
    if source:
        label = f"{source.rsplit('/', 1)[-1]}:{entry.get('line', '')}".rstrip(":")
        if _state.repo_url:
            href = f"{_state.repo_url}/blob/{_state.branch}/{source}"
            if entry.get("line"):
                href += f"#L{entry['line']}"
            parts.append(f'<a href="{html.escape(href)}">{html.escape(label)}</a>')
        else:
            parts.append(html.escape(label))
    return (
        f'<span class="b4-provenance" data-figure="{html.escape(name)}">'
        + " · ".join(parts)
        + "</span>"
    )


def _figure_block(m: re.Match[str], page: str, problems: list[str]) -> str:
    name = m.group("name")
    st = _state.status.get(name)
    if st is None:
        known = ", ".join(sorted(_state.status)) or "(none)"
        problems.append(f"unknown figure '{name}' (known: {known})")
        return m.group(0)
    _warn_if_stale(name, page)
    entry = st.entry or {}
    indent, prefix, alt = m.group("indent"), m.group("prefix"), m.group("alt")
    if not alt.strip():
        problems.append(f"figure '{name}' has no alt text: write ![what the figure shows](...)")
    attrs = m.group("attrs") or "{ loading=lazy }"
    files = entry.get("files") or {"light": f"{name}.svg", "dark": f"{name}.dark.svg"}
    caption = (m.group("caption") or "").strip()
    lines = [
        f'<figure class="b4-figure" id="figure-{name.replace("_", "-")}" markdown="span">',
        f"![{alt}]({prefix}figures/{files['light']}#only-light){attrs}",
        f"![{alt}]({prefix}figures/{files['dark']}#only-dark){attrs}",
        f'<figcaption markdown="span">{caption}'
        + (f"<br>{provenance(name, entry)}" if entry else "")
        + "</figcaption>",
        "</figure>",
    ]
    block = "\n".join(indent + line for line in lines)
    return f"\n{block}\n"


def format_number(value: Any, spec: str | None) -> str:
    """Format a manifest number for prose (``spec`` is a Python format spec)."""
    if spec:
        return format(value, spec)
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def _number(m: re.Match[str], page: str, problems: list[str]) -> str:
    name, key, spec = m.group("name"), m.group("key"), m.group("spec")
    st = _state.status.get(name)
    if st is None:
        known = ", ".join(sorted(_state.status)) or "(none)"
        problems.append(f"unknown figure '{name}' in {{{{ {name}.{key} }}}} (known: {known})")
        return m.group(0)
    if st.entry is None:  # declared but never made: like a stale figure, a warning
        _warn_if_stale(name, page)
        return f'<span class="b4-missing-number" title="figure {name} was never made">??</span>'
    numbers = st.entry.get("numbers", {})
    if key not in numbers:
        problems.append(
            f"figure '{name}' has no number '{key}' "
            f"(it has: {', '.join(sorted(numbers)) or 'none'})"
        )
        return m.group(0)
    _warn_if_stale(name, page)
    try:
        return format_number(numbers[key], spec and spec.strip())
    except (ValueError, TypeError) as err:
        problems.append(f"{{{{ {name}.{key}:{spec} }}}}: bad format spec ({err})")
        return m.group(0)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    page_path = page.file.src_uri
    problems: list[str] = []
    out = []
    for is_code, text in _split_code(markdown):
        if not is_code:
            text = FIGURE_RE.sub(lambda m: _figure_block(m, page_path, problems), text)
            for m in _INLINE_FIGURE_RE.finditer(text):
                _warn_inline(m.group("name"), page_path)
            text = NUMBER_RE.sub(lambda m: _number(m, page_path, problems), text)
        out.append(text)
    if problems:
        unique = list(dict.fromkeys(problems))
        raise PluginError(f"block4: {page_path}: " + "; ".join(unique) + " (see docs/reproduce.md)")
    return "".join(out)


# Inside an admonition or a content tab md_in_html does not apply: Markdown then wraps the
# figure in a paragraph and keeps the markdown="span" attributes. Unwrap and drop them.
_WRAPPED_FIGURE_RE = re.compile(
    r"<p>\s*(<figure class=\"b4-figure\"(?:(?!</figure>).)*</figure>)\s*</p>", re.DOTALL
)


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    if "b4-figure" not in html_text:
        return html_text
    html_text = _WRAPPED_FIGURE_RE.sub(lambda m: m.group(1), html_text)
    return re.sub(
        r"(<(?:figure class=\"b4-figure\"|figcaption)[^>]*?) markdown=\"span\"", r"\1", html_text
    )


def on_post_build(config: Any) -> None:
    # Remove notebook caches keyed on older versions of the package.
    base, keep = _state.cache_base, _state.cache_dir
    if base is not None and base.is_dir():
        for old in base.glob("block4-*"):
            if old != keep and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    stale = sorted({name for name, page in _state.warned if not page.endswith("#inline")})
    if stale:
        log.warning(
            "block4: %d stale figure(s) on the site: %s; refresh all with: %s",
            len(stale),
            ", ".join(stale),
            pipeline.refresh_command(stale),
        )
