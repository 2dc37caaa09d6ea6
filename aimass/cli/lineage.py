"""`aimass lineage`: which data, code and run made a model version or a release revision."""
from __future__ import annotations

import argparse

from aimass.cli.options import config_from_args, wire_repository_commands


def add_lineage_command(commands) -> None:
    lineage = commands.add_parser(
        "lineage", help="which data, code and run made a model version or a release revision",
        description="Print the data version (DVC md5), git commit, pipeline run, parent version and gate metrics "
                    "of a model version, or of the model a release revision served.")
    target = lineage.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", help="v<N> or an alias such as production")
    target.add_argument("--release", type=int, metavar="REVISION", help="a release revision (see release history)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    wire_repository_commands([(lineage, _lineage)])


def _lineage(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from aimass.registry import open_registry
    from aimass.releases import ReleaseError, open_release_backend

    config = config_from_args(args, args.repo.resolve())
    registry = open_registry(config)
    revision = None
    if args.release is not None:
        history = open_release_backend(config, registry).history()
        revision = next((r for r in history if r.revision == args.release), None)
        if revision is None:
            raise ReleaseError(f"no release revision {args.release}; revisions: "
                               f"{', '.join(str(r.revision) for r in history) or 'none'}")
    record = registry.get(revision.model_version if revision else args.version)
    if args.json:
        print(json.dumps({"model": asdict(record), "revision": asdict(revision) if revision else None}, indent=2))
        return 0
    lineage = record.lineage
    rows = [("data version (DVC md5)", lineage.get("data_md5", "unknown")),
            ("git commit", lineage.get("git_commit", "unknown")),
            ("pipeline run", f"{lineage.get('run_name', 'unknown')} (id {lineage.get('run_id', 'unknown')})"),
            ("base checkpoint", _describe_checkpoint(lineage.get("base_checkpoint"))),
            ("parent version", record.parent_version or "none"),
            ("trigger", lineage.get("trigger", "manual") + (f": {lineage['trigger_reason']}"
                                                            if lineage.get("trigger_reason") else "")),
            ("gate metrics", ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.metrics.items())) or "none"),
            ("created", record.created_at)]
    if revision is not None:
        rows.insert(0, ("release revision", f"{revision.revision}: {revision.description} ({revision.status}, by "
                                            f"{revision.triggered_by} at {revision.updated_at})"))
    print(f"{record.name} {record.version}")
    for label, value in rows:
        print(f"  {label:<22} {value}")
    return 0


def _describe_checkpoint(checkpoint: dict | None) -> str:
    """Where a model's pretrained weights came from: `hf:SOURCE (pretrained weights), FILE sha256 DIGEST, ...`."""
    if not checkpoint:
        return "none (random weights)"
    files = ", ".join(f"{name} sha256 {digest}" for name, digest in sorted(checkpoint["files"].items()))
    weights = "pretrained weights" if checkpoint["pretrained"] else "random weights"
    return f"{checkpoint['source']} ({weights}); {files}"
