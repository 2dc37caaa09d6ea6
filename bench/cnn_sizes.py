"""Which size of the built-in CNN should the quick profile train? Each size (and augmentation on or off) trained with
the same step budget on the same splits by the train stage's own function, one after another in one run: training
seconds, images/s, test accuracy, and time to reach the target accuracy's worth of learning.

    python bench/cnn_sizes.py [--steps 1260] [--sizes 32,64,128:256 16,32,64:128 ...] [--target 0.91]
"""
import argparse
import json
import time

from bench_data import ingested_splits

from aimass.training.loop import train_classifier
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard
from aimass.models.architecture import Signature, predict_probabilities

DEFAULT_SIZES = ("32,64,128:256", "24,48,96:192", "16,32,64:128", "16,32,64:64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1260)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="CHANNELS:HIDDEN, e.g. 16,32,64:128")
    parser.add_argument("--augment", choices=["on", "off", "both"], default="both")
    parser.add_argument("--target", type=float, default=0.91, help="test accuracy the deployed model needs")
    args = parser.parse_args()
    splits_dir = ingested_splits("quick")
    splits, _ = load_image_sets(splits_dir)
    signature = Signature.of_splits(SplitsCard.read(splits_dir))
    rows = []
    for size in args.sizes:
        channels, hidden = size.split(":")
        for augment in ([True, False] if args.augment == "both" else [args.augment == "on"]):
            config = load_config("quick", [f"model.channels=[{channels}]", f"model.hidden_units={hidden}",
                                           f"train.steps={args.steps}", f"augment.on_the_fly={str(augment).lower()}",
                                           "train.early_stopping=false", "compress.methods=[]"])
            started = time.perf_counter()
            model, result = train_classifier(config, splits["train"], splits["validation"], signature)
            seconds = time.perf_counter() - started
            test = splits["test"]
            accuracy = float((predict_probabilities(model, test.images, signature.input_spec).argmax(1)
                              == test.labels).mean())
            row = {"channels": channels, "hidden": int(hidden), "augment": augment,
                   "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(seconds, 1),
                   "images_per_second": round(result.images_per_second), "test_accuracy": round(accuracy, 4),
                   "meets_target": accuracy >= args.target}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| channels | hidden | augment | params | train s | images/s | test accuracy | >= target |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['channels']} | {row['hidden']} | {'on' if row['augment'] else 'off'} | {row['parameters']:,} "
              f"| {row['seconds']} | {row['images_per_second']:,} | {row['test_accuracy']:.4f} "
              f"| {'yes' if row['meets_target'] else 'no'} |")


if __name__ == "__main__":
    main()
