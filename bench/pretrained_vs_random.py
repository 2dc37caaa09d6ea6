"""Does bringing a pretrained checkpoint pay? The same network fine-tuned on 500 of scikit-learn's digits, once from
weights aimass pretrained on Fashion-MNIST and once from random weights, with the same budget, preprocessing and
seeds, side by side in one run. The network is a small Hugging Face ResNet (default) or a timm model
(`--architecture timm:resnet10t`).

1. pretrain: aimass trains `hf:` a ResNet config (no weights), or `timm:NAME` from random weights, on the real
   Fashion-MNIST; the model it saves is a checkpoint of that library (save_pretrained + the image processor's
   settings, or timm's config.json with the run's preprocessing as its pretrained_cfg, + model.safetensors);
2. fine-tune: the digits (8x8 grey PNG files, 500 for training and validation, the other 1,297 as the test split)
   from that checkpoint and from a folder holding its config files but no weights (the same network and
   preprocessing, random weights), `--seeds` times each; report test accuracy.

Every step is the pipeline's own stage function (ingest, train), on the CPU.

    python bench/pretrained_vs_random.py [--architecture hf|timm:NAME] [--pretrain-steps 600] [--finetune-steps 60]
                                         [--seeds 3] [--keep DIR]

With --keep, the Fashion-MNIST checkpoint and its splits stay in DIR, for bench/compression.py --teacher/--splits
(`--seeds 0 --hidden-sizes 64,128,256 --pretrain-steps 1260 --keep DIR`: a larger ResNet, pretraining only).
"""
import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aimass.ingestion.stage import ingest
from aimass.training.stage import train
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.data.fashion_mnist import DEFAULT_SOURCE_DIR
from aimass.data.importing import import_dataset
from aimass.data.versions import track_data
from aimass.lineage import Lineage
from aimass.models.architecture import predict_probabilities
from aimass.models.artifact import load_model

LINEAGE = Lineage(data_md5="bench", git_commit="bench", run_id="bench", run_name="pretrained-vs-random")
DIGITS_TRAIN = 500


def dvc_repo(path: Path, source: Path) -> Path:
    import subprocess

    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    import_dataset(source, path / "data")
    track_data(path)
    return path


def write_digits(root: Path) -> Path:
    """The first 500 digits under train/, the other 1,297 under test/, as 8x8 grey PNG files."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / ("train" if index < DIGITS_TRAIN else "test") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * (255 / 16)).astype(np.uint8)).save(folder / f"{index:04d}.png")
    return root


def resnet_config(folder: Path, hidden_sizes: list[int]) -> Path:
    from transformers import ResNetConfig

    ResNetConfig(num_channels=1, embedding_size=hidden_sizes[0], hidden_sizes=hidden_sizes, depths=[1, 1, 1],
                 num_labels=2).save_pretrained(folder)
    return folder


def test_accuracy(model_dir: Path, splits_dir: Path) -> float:
    loaded = load_model(model_dir)
    test = load_image_sets(splits_dir)[0]["test"]
    predictions = predict_probabilities(loaded.module, test.images, loaded.signature.input_spec).argmax(1)
    return float((predictions == test.labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--architecture", default="hf", help="hf (a small transformers ResNet) or timm:NAME")
    parser.add_argument("--hidden-sizes", default="32,64,128", help="the Hugging Face ResNet's stage widths")
    parser.add_argument("--keep", type=Path, help="keep the Fashion-MNIST checkpoint and splits in this folder")
    args = parser.parse_args()
    widths = [int(width) for width in args.hidden_sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        fashion = dvc_repo(work / "fashion", DEFAULT_SOURCE_DIR)
        network = (f"model.architecture=hf:{resnet_config(work / 'config', widths)}" if args.architecture == "hf"
                   else f"model.architecture={args.architecture}")
        pretrain = load_config("quick", [f"data.repo_dir={fashion}", network, f"train.steps={args.pretrain_steps}",
                                         "train.early_stopping=false"])
        started = time.perf_counter()
        ingest(pretrain, work / "fashion-splits")
        result = train(pretrain, work / "fashion-splits", work / "fashion-resnet", LINEAGE)
        pretrain_seconds = time.perf_counter() - started
        print(f"pretrained on Fashion-MNIST: validation accuracy {result.best_validation_accuracy:.4f}, "
              f"{pretrain_seconds:.0f} s ({args.pretrain_steps} steps)")

        pretrained = work / "fashion-resnet"
        random_init = work / "random-init"
        random_init.mkdir()
        for name in ("config.json", "preprocessor_config.json"):  # the same network and preprocessing, no weights
            if (pretrained / name).exists():
                shutil.copy(pretrained / name, random_init / name)

        digits = dvc_repo(work / "digits", write_digits(work / "digits-source"))
        accuracies: dict[str, list[float]] = {"pretrained": [], "random": []}
        for seed in range(args.seeds):
            for name, checkpoint in (("pretrained", pretrained), ("random", random_init)):
                model = ([f"model.architecture=hf:{checkpoint}"] if args.architecture == "hf" else
                         [f"model.architecture={args.architecture}", f"model.checkpoint={checkpoint}"])
                config = load_config("quick", [
                    f"data.repo_dir={digits}", *model, f"train.seed={seed}",
                    f"split.seed={seed}", f"train.steps={args.finetune_steps}", "train.batch_size=32",
                    "train.early_stopping=false", "train.learning_rate=0.05"])
                splits = work / f"digits-splits-{seed}"
                if not splits.exists():
                    ingest(config, splits)
                model_dir = work / f"digits-{name}-{seed}"
                train(config, splits, model_dir, LINEAGE)
                accuracies[name].append(test_accuracy(model_dir, splits))
                print(f"seed {seed} {name:>10}: test accuracy {accuracies[name][-1]:.4f}")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("fashion-resnet", "fashion-splits"):
                shutil.copytree(work / name, args.keep / name, dirs_exist_ok=True)

    if not args.seeds:
        return  # pretraining only (--keep), e.g. a teacher for bench/compression.py
    summary = {name: {"mean": round(statistics.mean(values), 4), "min": round(min(values), 4),
                      "max": round(max(values), 4)} for name, values in accuracies.items()}
    summary["gain_points"] = round(100 * (summary["pretrained"]["mean"] - summary["random"]["mean"]), 2)
    summary.update({"architecture": args.architecture, "digits_train_and_validation": DIGITS_TRAIN,
                    "finetune_steps": args.finetune_steps,
                    "pretrain_steps": args.pretrain_steps, "seeds": args.seeds})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
