"""`aimass data`: import an image data set into data/ pinned by DVC, push it to the DVC remote, pull it back."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from aimass.cli.options import add_config_arguments, add_repo_argument, config_from_args, wire_repository_commands


DATASET_DIR_VARIABLE = "AIMASS_FASHION_MNIST_DIR"


def add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="manage the versioned data set",
                               description="Manage the data set that data.dvc pins.")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    data_import = data_commands.add_parser(
        "import", help="import an image data set into data/ and pin it with DVC",
        description="Check every image of SOURCE (each is decoded), copy the originals into data/ with an index and "
                    "a data card, and `dvc add data`, so data.dvc pins the imported version. Layouts: a folder of "
                    "class folders, optionally under train/validation/test folders (imagefolder); a CSV or JSONL "
                    "file with file_name|path|image, label and optional split columns (manifest); MNIST-style IDX "
                    "files (idx). On any problem nothing changes: data/ and data.dvc stay as they were. Importing "
                    "the same files twice gives the same DVC hash.")
    data_import.add_argument("--source", type=Path, default=None,
                             help=f"the data set (default: the Fashion-MNIST demo, ${DATASET_DIR_VARIABLE} or "
                                  "/usr/share/datasets/fashion-mnist)")
    data_import.add_argument("--format", default="auto", choices=["auto", "imagefolder", "manifest", "idx"],
                             help="layout of --source (default: detected)")
    data_import.add_argument("--name", default=None,
                             help="the data set's name, which the model is registered under (default: the "
                                  "source folder's name)")
    data_import.add_argument("--skip-bad-images", action="store_true",
                             help="leave out files that do not decode, listing them in the data card, instead of "
                                  "refusing the import")
    add_config_arguments(data_import)
    add_repo_argument(data_import)
    data_import.set_defaults(handler=_data_import)
    data_push = data_commands.add_parser(
        "push", help="upload the pinned data version to the DVC remote",
        description="Upload the data version data.dvc pins to the DVC remote data.remote_url (S3/MinIO at "
                    "data.remote_endpoint; credentials from $AIMASS_S3_ACCESS_KEY/$AIMASS_S3_SECRET_KEY or "
                    ".dvc/config.local).")
    data_pull = data_commands.add_parser(
        "pull", help="download the pinned data version from the DVC remote",
        description="Make data/ hold exactly the version data.dvc pins, downloading from the DVC remote what the "
                    "local cache lacks.")
    wire_repository_commands([(data_push, _data_push), (data_pull, _data_pull)])


def _data_import(args: argparse.Namespace) -> int:
    from aimass.data.fashion_mnist import DEFAULT_SOURCE_DIR
    from aimass.data.importing import ImportSettings, import_dataset
    from aimass.data.versions import track_data

    source = args.source or Path(os.environ.get(DATASET_DIR_VARIABLE) or DEFAULT_SOURCE_DIR)
    repo = args.repo.resolve()
    config = config_from_args(args, repo, with_dataset=False)
    settings = ImportSettings(min_images_per_class=config.data.min_images_per_class,
                              skip_bad_images=args.skip_bad_images)
    card = import_dataset(source, repo / config.data.dataset_dir, args.format, args.name, settings)
    md5 = track_data(repo, config.data.dataset_dir)
    counts = ", ".join(f"{name} {count}" for name, count in card.splits.items())
    skipped = f"; left out {len(card.quarantined)} unreadable files (see data/dataset.json)" if card.quarantined else ""
    print(f"imported {card.name} from {source} as {card.source_format}: {len(card.class_names)} classes "
          f"({', '.join(card.class_names[:10])}{', ...' if len(card.class_names) > 10 else ''}), {counts}"
          f"{skipped}; data.dvc pins {md5}")
    return 0


def _data_push(args: argparse.Namespace) -> int:
    from aimass.data.versions import pinned_data_md5, push_data

    repo = args.repo.resolve()
    config = config_from_args(args, repo)
    uploaded = push_data(repo, config.data)
    print(f"pushed data version {pinned_data_md5(repo, config.data.dvc_file)} to {config.data.remote_url} "
          f"({uploaded} files uploaded)")
    return 0


def _data_pull(args: argparse.Namespace) -> int:
    from aimass.data.versions import pull_data

    repo = args.repo.resolve()
    config = config_from_args(args, repo)
    print(f"pulled data version {pull_data(repo, config.data)} from {config.data.remote_url}")
    return 0
