"""The example GitHub Actions workflow (examples/github-actions.yml) is paste-ready: it parses, names only
flags tunegate has, installs from a setting rather than a placeholder, keeps the served model's key in a
secret, budgets and times out, and its price and dry-run steps run as written."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: a dependency of transformers and huggingface_hub, so always installed

from advisor.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "github-actions.yml"
PLACEHOLDER = re.compile(r"your-org|your_org|example\.(com|org)|<[^>]*>|TODO|CHANGEME|\.\.\.|…", re.I)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def _step(job: dict[str, Any], name_part: str) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if name_part in s.get("name", "")]
    return step


def _commands(workflow: dict[str, Any]) -> list[list[str]]:
    """Every `tunegate ...` command of the `run:` scripts, split as a shell would."""
    commands = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True) if "<<" not in line else []
                if words[:1] == ["tunegate"]:
                    commands.append(words[1:])
    return commands


def test_every_tunegate_flag_in_the_workflow_exists(workflow) -> None:
    subcommands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    seen = []
    for command in _commands(workflow):
        known = subcommands[command[0]]._option_string_actions
        flags = [w.split("=")[0] for w in command[1:] if w.startswith("-")]
        assert [f for f in flags if f not in known] == [], command
        seen += flags
    assert [c[0] for c in _commands(workflow)] == ["advise", "advise", "train"]
    assert {"--backend", "--base-url", "--model", "--max-requests", "--dry-run", "--fail-on"} <= set(seen)


def test_the_served_model_its_key_budget_and_time_limit(workflow) -> None:
    advise, train = workflow["jobs"]["advise"], workflow["jobs"]["train"]
    assert advise["env"]["OPENAI_API_KEY"] == "${{ secrets.OPENAI_API_KEY }}"  # never in the file
    assert advise["env"]["LLM_BASE_URL"].startswith("${{ vars.")
    assert advise["timeout-minutes"] <= 120 and train["timeout-minutes"] > 0
    dry, real = [c for c in _commands(workflow) if c[0] == "advise"]
    assert "--dry-run" in dry and "--dry-run" not in real
    for command in (dry, real):
        assert command[command.index("--backend") + 1] == "openai"
        assert command[command.index("--base-url") + 1] == "$LLM_BASE_URL"
        assert command[command.index("--max-requests") + 1] == "$MAX_REQUESTS"
    steps = [s.get("name", "") for s in _steps(advise)]
    assert steps.index(_step(advise, "dry run")["name"]) < steps.index("Advise")  # cost before any call


def test_the_verdict_is_a_job_output_and_the_reports_reach_the_summary_and_artifacts(workflow) -> None:
    advise, train = workflow["jobs"]["advise"], workflow["jobs"]["train"]
    assert advise["outputs"]["verdict"] == "${{ steps.verdict.outputs.verdict }}"
    verdict = next(s for s in advise["steps"] if s.get("id") == "verdict")
    assert verdict["if"] == "always()" and "$GITHUB_OUTPUT" in verdict["run"]
    assert 'cat runs/gate/report.md >> "$GITHUB_STEP_SUMMARY"' in verdict["run"]
    upload = _step(advise, "Upload the report")
    assert upload["if"] == "always()" and "runs/gate/report.html" in upload["with"]["path"]
    assert train["needs"] == "advise" and train["if"] == "needs.advise.outputs.verdict == 'fine_tune'"
    assert "gpu" in train["runs-on"]  # a GPU runner's label
    (command,) = [c for c in _commands(workflow) if c[0] == "train"]
    assert "model=$FINETUNE_MODEL" in command  # the open-weight model B, not the served model A


def test_the_install_steps_have_no_placeholder(workflow) -> None:
    installs = [
        s["run"]
        for job in workflow["jobs"].values()
        for s in job["steps"]
        if "pip install" in s.get("run", "")
    ]
    assert len(installs) == 2
    for script in installs:
        assert not PLACEHOLDER.search(script), script
        assert '"$TUNEGATE_PIP_SPEC"' in script  # a repository variable the header explains
    for job in workflow["jobs"].values():
        assert job["env"]["TUNEGATE_PIP_SPEC"] == "${{ vars.TUNEGATE_PIP_SPEC }}"
    assert "TUNEGATE_PIP_SPEC" in WORKFLOW.read_text().split("\nname:")[0]  # documented in the header


@pytest.mark.slow
def test_the_price_and_dry_run_steps_run_as_written(workflow, tmp_path: Path) -> None:
    """The two steps' scripts, run by bash with the variables a repository would set: a price file, and
    a dry run that prices the served model's requests, sends nothing and writes the job summary."""
    from advisor.demo import write_demo_data

    data = write_demo_data(str(tmp_path / "data"), n=600)
    shim = tmp_path / "bin" / "tunegate"  # the installed console script, on this checkout
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m advisor.cli "$@"\n')
    shim.chmod(0o755)
    advise = workflow["jobs"]["advise"]
    env = {
        **os.environ,
        "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "DATA": data,
        "MAX_REQUESTS": workflow["env"]["MAX_REQUESTS"],
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",  # nothing listens: a dry run makes no call
        "LLM_MODEL": "served-large",
        "OPENAI_API_KEY": "sk-test",
        "PRICE_INPUT_PER_MILLION": "0.15",
        "PRICE_OUTPUT_PER_MILLION": "0.60",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    for name in ("Price file", "dry run"):
        done = subprocess.run(
            ["bash", "-e", "-c", _step(advise, name)["run"]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    out = (tmp_path / "dry-run.txt").read_text()
    assert "no model call was made" in out and "served-large" in out
    cost = re.search(r"Estimated cost: ([0-9.]+) USD", out)
    assert cost is not None and float(cost.group(1)) > 0
    assert (tmp_path / "summary.md").read_text().startswith("## tunegate dry run\n```\nDry run:")
    assert not (tmp_path / "runs").exists()  # the dry run writes no run folder
