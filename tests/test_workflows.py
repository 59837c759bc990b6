"""The GitHub workflows parse and do what the project promises.

ci.yml runs exactly the CI entry point (.ci/run, i.e. the README's `./dev.sh test`) and, on a
pull request, compares the figures with the base branch; pages.yml re-makes stale figures with
the published profile (results cache restored), checks that figures are fresh, builds
strictly, runs the browser tests and deploys to GitHub Pages only from main.
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
    assert "if" not in ci["jobs"]["test"]  # the tests run on every push and pull request
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
    # Re-make, check and tests run before the upload, so any failure blocks the deploy.
    build_steps = pages["jobs"]["build"]["steps"]
    remake = _step_index(build_steps, run=PUBLISHED_REMAKE)
    check = _step_index(build_steps, run="make_figures.py --check")
    tests = _step_index(build_steps, run="pytest tests/test_browser.py")
    upload = _step_index(build_steps, uses="actions/upload-pages-artifact")
    assert remake < check < tests < upload
    for i in (remake, check, tests):
        assert "if" not in build_steps[i], "a failing step must stop the job"


# -- figures re-made by the workflows ---------------------------------------------------------

PUBLISHED_REMAKE = "python scripts/make_figures.py --profile full --accelerator cpu --jobs auto"
CACHE_KEY = "figure-results-${{ hashFiles('src/block4/**/*.py') }}"


def _step_index(steps: list[dict], *, run: str = "", uses: str = "") -> int:
    found = [
        i
        for i, step in enumerate(steps)
        if (run and run in step.get("run", "")) or (uses and step.get("uses", "").startswith(uses))
    ]
    assert len(found) == 1, f"expected one step with {run or uses!r}, found {found}"
    return found[0]


def _summary_on_failure(script: str) -> None:
    """A re-make step keeps the command's exit status and puts its output in the summary."""
    assert "| tee remake.log" in script and "status=${PIPESTATUS[0]}" in script
    assert re.search(r"tail -n \d+ remake\.log", script)
    assert '>> "$GITHUB_STEP_SUMMARY"' in script
    assert script.rstrip().endswith('exit "$status"')


def test_pages_remakes_stale_figures_with_the_results_cache() -> None:
    pages = _load("pages.yml")
    steps = pages["jobs"]["build"]["steps"]
    restore = _step_index(steps, uses="actions/cache/restore")
    save = _step_index(steps, uses="actions/cache/save")
    remake = _step_index(steps, run=PUBLISHED_REMAKE)
    assert restore < remake < save
    assert steps[restore]["with"] == {
        "path": ".cache/results",
        "key": CACHE_KEY,
        "restore-keys": "figure-results-",
    }
    # Saved even when a figure failed (the others keep their results), unless it was a hit.
    assert steps[save]["with"] == {"path": ".cache/results", "key": CACHE_KEY}
    assert "always()" in steps[save]["if"]
    assert f"steps.{steps[restore]['id']}.outputs.cache-hit" in steps[save]["if"]
    _summary_on_failure(steps[remake]["run"])

    # What was re-made and why: the comparison with the commit, in the job summary.
    summary = _step_index(steps, run="python -m block4.compare HEAD --out figure-changes")
    assert remake < summary < _step_index(steps, run="make_figures.py --check")
    assert 'cat figure-changes/summary.md >> "$GITHUB_STEP_SUMMARY"' in steps[summary]["run"]
    # The re-made figures and manifest are kept as an artifact (docs/reproduce.md says why).
    artifact = next(
        s
        for s in steps
        if s.get("uses", "").startswith("actions/upload-artifact")
        and s["with"]["name"] == "figures"
    )
    assert "docs/figures/" in artifact["with"]["path"]
    assert artifact["with"]["if-no-files-found"] == "error"
    # Publishing needs no write access to the repository.
    assert pages["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    reproduce = (ROOT / "docs" / "reproduce.md").read_text(encoding="utf-8")
    assert "## How the published site is rebuilt" in reproduce


def test_pull_requests_show_what_they_do_to_the_figures() -> None:
    ci = _load("ci.yml")
    assert ci["permissions"] == {"contents": "read"}
    job = ci["jobs"]["figures"]
    assert job["if"] == "github.event_name == 'pull_request'"
    steps = job["steps"]
    checkout = _step_index(steps, uses="actions/checkout")
    assert steps[checkout]["with"]["fetch-depth"] == 0  # the base branch, for git show
    cache = _step_index(steps, uses="actions/cache")
    assert steps[cache]["uses"].split("@")[0] == "actions/cache"
    assert steps[cache]["with"] == {
        "path": ".cache/results",
        "key": CACHE_KEY,
        "restore-keys": "figure-results-",
    }
    remake = _step_index(steps, run="python scripts/make_figures.py --profile")
    assert "--jobs auto" in steps[remake]["run"]
    assert job["env"]["FIGURE_PROFILE"] in ("smoke", "quick", "full")
    _summary_on_failure(steps[remake]["run"])
    compare = _step_index(steps, run="python -m block4.compare")
    assert cache < remake < compare
    assert (
        'python -m block4.compare "origin/$BASE_REF" --out figure-changes' in steps[compare]["run"]
    )
    assert steps[compare]["env"] == {"BASE_REF": "${{ github.base_ref }}"}
    assert 'cat figure-changes/summary.md >> "$GITHUB_STEP_SUMMARY"' in steps[compare]["run"]
    # Still compared when a figure failed to re-make (not when set-up failed or was cancelled).
    assert "!cancelled()" in steps[compare]["if"]
    assert f"steps.{steps[remake]['id']}.outcome" in steps[compare]["if"]
    upload = _step_index(steps, uses="actions/upload-artifact")
    assert compare < upload
    assert steps[upload]["with"] == {"name": "figure-changes", "path": "figure-changes/"}


def test_the_cache_key_covers_every_package_source() -> None:
    # hashFiles patterns are globs from the repository root: this one must match the sources.
    assert list((ROOT / "src" / "block4").rglob("*.py"))
    for name in ("ci.yml", "pages.yml"):
        text = (WORKFLOWS / name).read_text(encoding="utf-8")
        keys = re.findall(r"key: (figure-results-.*)", text)
        assert keys and set(keys) == {CACHE_KEY}, (name, keys)
