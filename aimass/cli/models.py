"""`aimass models`: the registry's versions and aliases."""
from __future__ import annotations

import argparse
from pathlib import Path

from aimass.cli.options import registry_from_args, wire_repository_commands


def add_models_commands(commands) -> None:
    models = commands.add_parser("models", help="the model registry: versions and aliases",
                                 description="Inspect the model registry (registry.* settings; local folder by "
                                             "default) and move aliases.")
    model_commands = models.add_subparsers(title="models commands", metavar="COMMAND")
    models_list = model_commands.add_parser("list", help="every version with its accuracy and aliases",
                                            description="List every version, oldest first, with aliases.")
    show_version = model_commands.add_parser("show", help="one version's record as JSON",
                                             description="Print a version's record: files and sha256, lineage, "
                                                         "metrics, creation time.")
    show_version.add_argument("version", help="v<N> or an alias such as production")
    promote = model_commands.add_parser("promote", help="point an alias at a version",
                                        description="Point an alias (production, staging, ...) at a version. "
                                                    "Versions never change; aliases move.")
    promote.add_argument("version", help="v<N> or an alias")
    promote.add_argument("--alias", required=True, help="e.g. production")
    push = model_commands.add_parser("push", help="publish a model directory as the next version",
                                     description="Upload a model directory (its sha256 manifest is checked "
                                                 "first) as the next immutable version. The pipeline's deploy "
                                                 "step does this for every blessed model.")
    push.add_argument("model_dir", type=Path, help="a model directory written by aimass (model.json, manifest.json)")
    wire_repository_commands([(models_list, _models_list), (show_version, _models_show),
                               (promote, _models_promote), (push, _models_push)])


def _models_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aimass.terminal import console

    registry = registry_from_args(args)
    aliases_by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        aliases_by_version.setdefault(version, []).append(alias)
    table = Table(title=f"{registry.model_name} in {registry.store.description}", title_justify="left")
    for column in ("version", "created (UTC)", "accuracy (test, or validation)", "data md5", "git commit", "aliases"):
        table.add_column(column)
    for record in registry.versions():
        accuracy = record.metrics.get("accuracy")
        shown = f"{accuracy:.4f}" if accuracy is not None else (
            f"{record.metrics['validation_accuracy']:.4f} (val.)" if "validation_accuracy" in record.metrics else "")
        table.add_row(record.version, record.created_at, shown,
                      record.lineage.get("data_md5", "")[:12], record.lineage.get("git_commit", "")[:12],
                      ", ".join(sorted(aliases_by_version.get(record.version, []))))
    console().print(table)
    return 0


def _models_show(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from aimass.registry import manifest_sha256

    registry = registry_from_args(args)
    record = registry.get(args.version)
    # The storage URI and manifest sha256 are what pin this version in a Helm release's values.
    shown = {**asdict(record), "storage_uri": registry.storage_uri(record.version),
             "manifest_sha256": manifest_sha256(record)}
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


def _models_push(args: argparse.Namespace) -> int:
    from aimass.models.card import CARD_FILE, ModelCard

    # What the model's own card measured (the deploy step records the gate's test metrics instead); a compressed
    # candidate's card holds only its teacher's score, which is not this model's.
    card_path = args.model_dir / CARD_FILE
    card = ModelCard.parse(card_path.read_text(), str(card_path)) if card_path.is_file() else None
    measured = card is not None and card.training is not None and card.validation_accuracy is not None
    metrics = {"validation_accuracy": card.validation_accuracy} if measured else {}
    record = registry_from_args(args).push(args.model_dir, metrics=metrics)
    print(f"pushed {args.model_dir} as {record.name} {record.version}")
    return 0


def _models_promote(args: argparse.Namespace) -> int:
    record = registry_from_args(args).promote(args.version, args.alias)
    print(f"{args.alias} -> {record.version}")
    return 0
