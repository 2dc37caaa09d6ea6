"""`aimass serve`: the Open Inference Protocol v2 server, following the release or serving one model."""
from __future__ import annotations

import argparse
from pathlib import Path

from aimass.cli.options import config_from_args, sha256_argument, wire_repository_commands
from aimass.errors import AimassError


def add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve the released model over the Open Inference Protocol v2 (REST)",
        description="Serve /v2/health/{live,ready}, /v2/models/NAME[/ready|/infer] and /metrics. By default the "
                    "server follows the release: each new revision's model is pulled, sha256-checked, warmed up "
                    "and swapped in while requests keep flowing. A bearer token is required when "
                    "$AIMASS_SERVING_TOKEN or serving.token_file is set. Settings: serving.* (aimass config show).")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--model-version", default=None, metavar="VERSION",
                        help="serve this registry version or alias only, ignoring the release")
    source.add_argument("--model-dir", type=Path, default=None, help="serve this model directory as it is")
    source.add_argument("--model-uri", default=None, metavar="URI",
                        help="serve the version at s3://BUCKET/models/NAME/versions/vN (what the Helm chart passes)")
    serve.add_argument("--model-sha256", default=None, metavar="HEX", type=sha256_argument,
                       help="refuse the version unless its manifest.json has this sha256 (with --model-version/-uri)")
    serve.add_argument("--canary-file", type=Path, default=None, metavar="PATH",
                       help="with --model-uri: the canary of the same Helm revision, re-read as it changes (the "
                            "chart mounts values.canary there)")
    serve.add_argument("--host", default=None, help="address to listen on (default: serving.host)")
    serve.add_argument("--port", type=int, default=None, help="port (default: serving.port; 0 = any free port)")
    wire_repository_commands([(serve, _serve)])


def _serve(args: argparse.Namespace) -> int:
    from aimass.serving import open_model_source, serve_forever

    # A model directory is named after its own card's data set, not after the data set the repository holds.
    config = config_from_args(args, args.repo.resolve(), with_dataset=args.model_dir is None)
    listen = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    config = config.with_serving(**listen)
    if args.model_sha256 and not (args.model_version or args.model_uri):
        raise AimassError("--model-sha256 pins a registry version: give --model-version or --model-uri with it")
    if args.model_version:
        from aimass.registry import check_version_or_alias

        check_version_or_alias(args.model_version)  # a server that can never become ready must not start
    from aimass.registry import registered_model_name

    if args.canary_file and not args.model_uri:
        raise AimassError("--canary-file goes with --model-uri (the Helm chart's pinned version); a server that "
                          "follows the release reads its canary from the release history")
    source = open_model_source(config, args.model_version, args.model_dir, args.model_uri, args.model_sha256,
                               args.canary_file)
    name = registered_model_name(config, _dataset_of_model(args.model_dir) if args.model_dir else None)
    serve_forever(config, name, source, lambda url: print(f"serving {name} at {url}/v2/models/{name}/infer", flush=True))
    return 0


def _dataset_of_model(model_dir: Path) -> str | None:
    """The data set a model directory was trained on, as its card records it (a directory has no registry name)."""
    from aimass.models.card import CARD_FILE, ModelCard

    card = model_dir / CARD_FILE
    return ModelCard.parse(card.read_text(), str(card)).dataset.name if card.is_file() else None
