"""The example of docs/reuse.md runs, and its snippets are the file's sections."""

from __future__ import annotations

import importlib.util
import re


def load_example(root):
    path = root / "docs" / "examples" / "reuse_example.py"
    spec = importlib.util.spec_from_file_location("reuse_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reuse_example_runs_and_learns(root, tmp_path):
    example = load_example(root)
    result = example.main(out_dir=tmp_path, max_epochs=20)
    assert result["val_loss"] < 0.9  # a constant Gaussian fit of y scores about 1.4
    assert 0.8 < result["coverage_90"] < 0.97  # calibrated-ish 90 % intervals
    assert result["epochs_recorded"] == 20
    assert result["poisson_nll"] < 1.5
    assert abs(result["class_prob_sum"] - 1) < 1e-5
    assert (tmp_path / "regressor.ckpt").is_file()


def test_reuse_page_includes_every_section_of_the_example(root):
    page = (root / "docs" / "reuse.md").read_text()
    source = (root / "docs" / "examples" / "reuse_example.py").read_text()
    included = set(re.findall(r'--8<-- "docs/examples/reuse_example.py:(\w+)"', page))
    sections = set(re.findall(r"# --8<-- \[start:(\w+)\]", source))
    assert included == sections and len(sections) >= 5
