"""The GitHub workflows: valid against GitHub's workflow schema, and every aimass command they run is one the CLI
accepts. (GitHub itself cannot run here; these are the checks that can.)"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from aimass.cli import build_parser

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
PULL_REQUEST, RETRAIN = WORKFLOWS / "pull-request.yml", WORKFLOWS / "retrain.yml"


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1): take it back.
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True)
    return workflow


def run_scripts(path: Path) -> list[str]:
    return [step["run"] for job in load(path)["jobs"].values() for step in job["steps"] if "run" in step]


def aimass_commands(path: Path) -> list[list[str]]:
    commands = []
    for script in run_scripts(path):
        for line in script.replace("\\\n", " ").splitlines():  # folded (>-) scripts are one line already
            if ".venv/bin/aimass " in line:
                command = line.split(".venv/bin/aimass ", 1)[1]
                command = re.sub(r"\$\{?(\w+)(::8)?\}?", "x", command)  # environment values are unknown here
                commands.append(shlex.split(command))
    return commands


def test_the_workflows_match_githubs_workflow_schema():
    finished = subprocess.run([str(Path(sys.prefix) / "bin" / "check-jsonschema"), "--builtin-schema",
                               "vendor.github-workflows", str(PULL_REQUEST), str(RETRAIN)],
                              capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr


@pytest.mark.parametrize("workflow", [PULL_REQUEST, RETRAIN], ids=lambda path: path.name)
def test_every_aimass_command_in_a_workflow_parses(workflow):
    commands = aimass_commands(workflow)
    assert commands
    for command in commands:
        build_parser().parse_args(command)  # exits (SystemExit) on an unknown option


def test_pull_requests_run_the_readmes_test_command_and_post_a_tiny_runs_summary():
    scripts = run_scripts(PULL_REQUEST)
    assert "make test" in scripts
    assert ["run", "--profile", "tiny", "--summary-markdown", "tiny-run.md"] in aimass_commands(PULL_REQUEST)
    assert any("gh pr comment" in script and "--body-file tiny-run.md" in script for script in scripts)
    assert load(PULL_REQUEST)["on"] == {"pull_request": None}


def test_a_push_to_main_touching_data_stages_or_dag_submits_a_run_pinned_to_the_commit():
    trigger = load(RETRAIN)["on"]["push"]
    assert trigger["branches"] == ["main"]
    assert set(trigger["paths"]) == {"data.dvc", "components/**", "pipelines/**"}
    submit = next(command for command in aimass_commands(RETRAIN) if command[0] == "submit")
    assert "--wait" in submit and submit[submit.index("--git-commit") + 1] == "x"  # "$GITHUB_SHA"
    assert '--git-commit "$GITHUB_SHA"' in " ".join(run_scripts(RETRAIN))


def test_the_nightly_recurring_run_follows_main_and_no_workflow_is_scheduled():
    schedule = next(command for command in aimass_commands(RETRAIN) if command[0] == "schedule")
    assert schedule[:3] == ["schedule", "create", "aimass-nightly"] and "--replace" in schedule
    assert all("schedule" not in load(path)["on"] for path in (PULL_REQUEST, RETRAIN))


def test_credentials_come_only_from_repository_secrets():
    for path in (PULL_REQUEST, RETRAIN):
        text = path.read_text()
        for variable in ("AIMASS_KFP_TOKEN", "AIMASS_S3_ACCESS_KEY", "AIMASS_S3_SECRET_KEY"):
            for value in re.findall(rf"{variable}:\s*(.+)", text):
                assert re.fullmatch(r"\$\{\{ secrets\.\w+ \}\}", value.strip()), (path.name, variable)
