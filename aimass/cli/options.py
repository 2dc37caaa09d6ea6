"""What the commands share: the --profile/--set and --repo options, the configuration they resolve to, and the
registry and release backend a command opens from them."""
from __future__ import annotations

import argparse
import re
from pathlib import Path


def wire_repository_commands(commands_and_handlers, default_profile: str = "quick") -> None:
    """Commands that act on the registry or releases of a repository take --profile/--set and --repo."""
    for command, handler in commands_and_handlers:
        add_config_arguments(command, default_profile)
        add_repo_argument(command)
        command.set_defaults(handler=handler)


def add_config_arguments(parser: argparse.ArgumentParser, default_profile: str = "quick") -> None:
    parser.add_argument("--profile", default=default_profile, choices=["tiny", "quick", "full"],
                        help=f"configuration profile (default: {default_profile})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train.epochs=5 (repeatable)")


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the aimass/DVC repository (default: .)")


def config_from_args(args: argparse.Namespace, repo: Path | None = None, with_dataset: bool = True):
    """The configuration for --profile and --set; the model's name defaults to the imported data set's."""
    from aimass.config import load_config
    from aimass.data.card import DataCard, model_name_for
    from aimass.errors import DataVersionError

    overrides = list(args.overrides)
    if repo is not None and not any(o.startswith("data.repo_dir=") for o in overrides):
        overrides.insert(0, f"data.repo_dir={repo}")
    config = load_config(args.profile, overrides)
    if with_dataset and repo is not None and config.registry.model_name is None:
        try:
            card = DataCard.read(Path(config.data.repo_dir) / config.data.dataset_dir)
        except DataVersionError:
            return config  # no data set imported: commands that need a model name say so
        config = load_config(args.profile, [*overrides, f"registry.model_name={model_name_for(card.name)}"])
    return config


def sha256_argument(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256: 64 lowercase hex digits")
    return text


def registry_from_args(args: argparse.Namespace):
    from aimass.registry import open_registry

    return open_registry(config_from_args(args, args.repo.resolve()))


def release_backend_from_args(args: argparse.Namespace):
    from aimass.registry import open_registry
    from aimass.releases import open_release_backend

    config = config_from_args(args, args.repo.resolve())
    return open_release_backend(config, open_registry(config))


def trigger_from_args(args: argparse.Namespace) -> str:
    from aimass.releases import default_trigger

    return args.triggered_by or default_trigger()


def print_revision(revision) -> None:
    lineage = ", ".join(f"{key} {value}" for key, value in sorted(revision.lineage.items()))
    print(f"revision {revision.revision}: {revision.model_name} {revision.model_version} ({revision.status}, "
          f"{revision.description}, by {revision.triggered_by} at {revision.updated_at}); lineage: {lineage}")
