"""A FAKE helm executable for the Helm release backend's tests: no cluster can run here.

It records every call (argv, one JSON line each, in $FAKE_HELM_STATE/calls.jsonl) and keeps a release history the way
helm does (revisions, statuses, "Rollback to N", values per revision), printing `helm history -o json` and `helm get
values -o json` in helm's own output format. Before an upgrade it renders the chart with the real helm
($FAKE_HELM_REAL) so that values the chart's schema rejects fail as they would on a cluster.

Knobs: $FAKE_HELM_VERSION (default v4.1.4); a file $FAKE_HELM_STATE/fail-next-upgrade makes the next upgrade fail
with its text, as a rollout that never became ready does.
"""
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

STATE = Path(os.environ["FAKE_HELM_STATE"])
HISTORY = STATE / "history.json"
CHART_LABEL = "aimass-serving-0.1.0"


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "calls.jsonl", "a") as calls:
        calls.write(json.dumps(argv) + "\n")
    command = argv[0]
    if command == "version":
        print(os.environ.get("FAKE_HELM_VERSION", "v4.1.4"))
        return 0
    if command == "get" and argv[1] == "values":
        revision = argv[argv.index("--revision") + 1]
        print((STATE / "values" / f"{revision}.json").read_text())
        return 0
    if command != "upgrade" and not HISTORY.is_file():
        return fail("Error: release: not found")
    handler = {"history": history, "upgrade": upgrade, "rollback": rollback, "uninstall": uninstall}[command]
    return handler(argv)


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def history(argv: list[str]) -> int:
    print(HISTORY.read_text().strip())
    return 0


def upgrade(argv: list[str]) -> int:
    name, chart = [arg for arg in argv[1:4] if not arg.startswith("--")][:2]
    value_files = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-f"]
    file_arguments = [part for path in value_files for part in ("-f", path)]
    rendered = subprocess.run([os.environ["FAKE_HELM_REAL"], "template", name, chart, *file_arguments],
                              capture_output=True, text=True, check=False)
    if rendered.returncode != 0:
        return fail(rendered.stderr.strip())
    (STATE / "last-rendered.yaml").write_text(rendered.stdout)  # what the cluster would have been sent
    values: dict = {}
    for path in value_files:
        values = merge(values, yaml.safe_load(Path(path).read_text()) or {})
    revisions = read_history()
    failure = STATE / "fail-next-upgrade"
    if failure.is_file():
        message = failure.read_text().strip()
        failure.unlink()
        append(revisions, values, "failed", f'Upgrade "{name}" failed: {message}', supersede=False)
        previous = next((r for r in reversed(revisions) if r["status"] == "deployed"), None)
        if previous is not None and ("--rollback-on-failure" in argv or "--atomic" in argv):
            rollback_to(revisions, previous["revision"])
        write_history(revisions)
        return fail(f"Error: UPGRADE FAILED: release {name} failed, and has been rolled back due to "
                    f"rollback-on-failure being set: {message}")
    described = argv[argv.index("--description") + 1] if "--description" in argv else None
    append(revisions, values, "deployed", described or ("Upgrade complete" if revisions else "Install complete"))
    write_history(revisions)
    print(f'Release "{name}" has been upgraded. Happy Helming!')
    return 0


def rollback(argv: list[str]) -> int:
    revisions = read_history()
    target = int(argv[2])
    if not any(r["revision"] == target for r in revisions):
        return fail(f"Error: release has no {target} version")
    rollback_to(revisions, target)
    write_history(revisions)
    print("Rollback was a success! Happy Helming!")
    return 0


def uninstall(argv: list[str]) -> int:
    revisions = read_history()
    for entry in revisions:
        if entry["status"] == "deployed":
            entry["status"] = "uninstalled"
            entry["description"] = argv[argv.index("--description") + 1] if "--description" in argv else \
                "Uninstallation complete"
    write_history(revisions)
    print(f'release "{argv[1]}" uninstalled')
    return 0


def rollback_to(revisions: list[dict], target: int) -> None:
    values = json.loads((STATE / "values" / f"{target}.json").read_text())
    append(revisions, values, "deployed", f"Rollback to {target}", rollback_revision=target)


def append(revisions: list[dict], values: dict, status: str, description: str, supersede: bool = True,
           rollback_revision: int | None = None) -> None:
    if supersede:
        for entry in revisions:
            if entry["status"] == "deployed":
                entry["status"] = "superseded"
    number = len(revisions) + 1
    entry = {"revision": number, "updated": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
             "status": status, "chart": CHART_LABEL, "app_version": "0.1.0"}
    if rollback_revision is not None:
        entry["rollback_revision"] = rollback_revision
    entry["description"] = description
    revisions.append(entry)
    (STATE / "values").mkdir(exist_ok=True)
    (STATE / "values" / f"{number}.json").write_text(json.dumps(values))


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def read_history() -> list[dict]:
    return json.loads(HISTORY.read_text()) if HISTORY.is_file() else []


def write_history(revisions: list[dict]) -> None:
    HISTORY.write_text(json.dumps(revisions, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
