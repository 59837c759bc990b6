"""MkDocs hook for the live cells: ship the engine into the site, load the cells' script where used.

* Every build copies the real ``block4/autograd.py``, ``block4/graph_drawing.py``,
  ``block4/graph_layout.py`` and ``block4/live_cells.py`` from ``src/`` into ``<site>/live/block4/`` (never a copy kept in
  ``docs/``): the live cells run exactly the code the figures and tests run.
* A page whose HTML holds a live cell (``class="live-cell"``) or the gate explorer
  (``class="live-explorer"``) gets ``javascripts/live.css`` and ``javascripts/live.js``; no
  other page loads anything new. The script is told where the Python runtime is
  (``javascripts/vendor/pyodide/``, fetched by ``scripts/vendor_pyodide.sh``), or that this
  build has none, in which case the cells say so instead of running.
* ``mkdocs serve`` serves ``.mjs`` as JavaScript and ``.wasm`` as WebAssembly, as browsers
  require for the runtime.
"""

from __future__ import annotations

import mimetypes
import shutil
from pathlib import Path
from typing import Any

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")

PACKAGE = Path(__file__).resolve().parent
#: The modules the live cells import, copied from src/block4 into the site on every build.
SHIPPED = ("autograd.py", "graph_drawing.py", "graph_layout.py", "live_cells.py")
#: Where the shipped modules land in the site.
SITE_FOLDER = "live/block4"
#: Where the vendored runtime lives, in docs/ and in the site.
RUNTIME = "javascripts/vendor/pyodide/"
MARKERS = ('class="live-cell', 'class="live-explorer')


def runtime_version(docs_dir: Path) -> str | None:
    """The vendored Pyodide version, or ``None`` when this build has no (complete) runtime."""
    stamp = docs_dir / RUNTIME / "VERSION"
    if not stamp.is_file():
        return None
    first = stamp.read_text(encoding="utf-8").split("\n", 1)[0]  # "pyodide 314.0.7"
    return first.removeprefix("pyodide ").strip() or None


def site_root(page_url: str) -> str:
    """The relative path from a page (``"backpropagation/"``) back to the site root."""
    return "../" * page_url.count("/")


def live_tags(page_url: str, version: str | None) -> str:
    """The stylesheet and script tags a page with live cells gets."""
    root = site_root(page_url)
    runtime = f"{root}{RUNTIME}" if version else ""
    return (
        f'\n<link rel="stylesheet" href="{root}javascripts/live.css">'
        f'\n<script src="{root}javascripts/live.js" data-site-root="{root}" '
        f'data-runtime="{runtime}" data-runtime-version="{version or ""}" '
        f'data-modules="{root}{SITE_FOLDER}/" data-shipped="{",".join(SHIPPED)}"></script>\n'
    )


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    if not any(marker in html for marker in MARKERS):
        return html
    return html + live_tags(page.url, runtime_version(Path(config["docs_dir"])))


def on_post_build(config: Any) -> None:
    dest = Path(config["site_dir"]) / SITE_FOLDER
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copyfile(PACKAGE / name, dest / name)
