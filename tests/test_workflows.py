"""The GitHub workflows parse and do what the project promises.

ci.yml runs exactly the CI entry point (.ci/run, i.e. the README's `./dev.sh test`); pages.yml
builds strictly, checks that figures are fresh, runs the browser tests and deploys to GitHub
Pages only from main.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    # PyYAML reads the bare key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _run_lines(workflow: dict) -> list[str]:
    lines = []
    for step in _steps(workflow):
        lines += [line.strip() for line in step.get("run", "").splitlines() if line.strip()]
    return lines


def _uses(workflow: dict) -> list[str]:
    return [step["uses"].split("@")[0] for step in _steps(workflow) if "uses" in step]


@pytest.mark.parametrize("name", ["ci.yml", "pages.yml"])
def test_workflow_is_valid(name: str) -> None:
    workflow = _load(name)
    assert workflow["on"], f"{name} has no trigger"
    for job_name, job in workflow["jobs"].items():
        assert "runs-on" in job, f"{name}: job {job_name} has no runs-on"
        assert job.get("steps"), f"{name}: job {job_name} has no steps"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{name}: {step} needs run or uses"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]


def test_ci_runs_the_same_command_as_ci_run() -> None:
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    assert "bash .ci/run" in _run_lines(ci)
    # .ci/run itself is the README's test command.
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\s*(bash\s+)?\./dev\.sh test\s*$", ci_run, re.M), ci_run
    job = next(iter(ci["jobs"].values()))
    assert job["runs-on"].startswith("ubuntu")
    python = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python")]
    assert python and str(python[0]["with"]["python-version"]) == "3.11"


def test_pages_builds_strictly_checks_figures_tests_and_deploys_from_main() -> None:
    pages = _load("pages.yml")
    lines = _run_lines(pages)
    text = "\n".join(lines)
    assert "push" in pages["on"] and pages["on"]["push"]["branches"] == ["main"]
    assert re.search(r"mkdocs build --strict", text)
    assert "python scripts/make_figures.py --check" in text
    assert re.search(r"pytest tests/test_browser\.py", text)
    assert "actions/upload-pages-artifact" in _uses(pages)
    assert "actions/deploy-pages" in _uses(pages)
    assert pages["permissions"]["pages"] == "write"
    assert pages["permissions"]["id-token"] == "write"
    deploy = pages["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert "refs/heads/main" in deploy["if"]
    assert deploy["environment"]["name"] == "github-pages"
    # The figure check and the tests run before the upload, so a failing check blocks the deploy.
    build_steps = pages["jobs"]["build"]["steps"]
    order = [
        i
        for i, s in enumerate(build_steps)
        if "--check" in s.get("run", "")
        or "pytest" in s.get("run", "")
        or s.get("uses", "").startswith("actions/upload-pages-artifact")
    ]
    assert len(order) == 3 and build_steps[order[-1]].get("uses"), order
