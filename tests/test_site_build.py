"""The site builds strictly and contains every page of the navigation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _nav_files(nav) -> list[str]:
    files: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            files += _nav_files(value)
        else:
            files.append(value)
    return files


def _load_nav(root: Path) -> list[str]:
    # mkdocs.yml may contain python tags (e.g. !!python/name); we only need the nav.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *a: None)
    Loader.add_multi_constructor("!", lambda *a: None)
    config = yaml.load((root / "mkdocs.yml").read_text(), Loader=Loader)
    return _nav_files(config["nav"])


def test_every_nav_page_is_built(built_site: Path, root: Path) -> None:
    pages = _load_nav(root)
    assert len(pages) >= 9
    for page in pages:
        stem = str(Path(page).with_suffix(""))  # chapter.md and notebooks/chapter.py alike
        if stem == "index" or stem.endswith("/index"):
            html = built_site / stem.removesuffix("index") / "index.html"
        else:
            html = built_site / stem / "index.html"
        assert html.is_file(), f"{page} was not built ({html})"
        assert "<h1" in html.read_text(encoding="utf-8"), f"{page} has no heading"


def test_api_reference_renders_docstrings(built_site: Path) -> None:
    html = (built_site / "reference" / "index.html").read_text(encoding="utf-8")
    # A documented symbol and a sentence of its docstring must appear.
    assert "block4" in html
    figures = (built_site / "reference" / "figures" / "index.html").read_text(encoding="utf-8")
    assert "FigureContext" in figures
    assert "Everything a figure function may depend on" in figures
