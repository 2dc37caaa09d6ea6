"""Training throughput with 1, 2, ... processes (torchrun + DistributedDataParallel), side by side in one run.

Every configuration trains the same model on the same images with the same global batch, through the train stage's
own entry point (`aimass.training.stage.train`, which starts torchrun when train.nproc > 1). Configurations alternate in
rounds so drift in a shared machine's speed hits all alike; the median training images/s of each is reported with
its ratio to one process. Images/s counts optimisation steps only (start-up, validation and saving excluded);
wall-clock seconds per run (torchrun's start-up included) are printed beside it.

    python bench/distributed_scaling.py                         # CPU: 1 and 2 processes (gloo)
    python bench/distributed_scaling.py --device cuda --nproc 1 2 4 --images 60000 --batch-size 1024
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from aimass.ingestion.stage import ingest
from aimass.training.stage import train
from aimass.config import load_config
from aimass.lineage import Lineage

REPO_ROOT = Path(__file__).resolve().parent.parent
LINEAGE = Lineage(data_md5="bench", git_commit="bench", run_id="bench", run_name="bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=12_000, help="training images")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch (split across processes)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    base = [f"data.repo_dir={REPO_ROOT}", f"split.train_limit={args.images}", f"train.batch_size={args.batch_size}",
            "train.steps=null", f"train.epochs={args.epochs}", f"train.device={args.device}", "augment.on_the_fly=false"]
    with tempfile.TemporaryDirectory() as work:
        splits = Path(work) / "splits"
        ingest(load_config("quick", base), splits)
        speeds = {n: [] for n in args.nproc}
        seconds = {n: [] for n in args.nproc}
        for round_number in range(args.rounds):
            order = args.nproc if round_number % 2 == 0 else list(reversed(args.nproc))
            for nproc in order:
                config = load_config("quick", [*base, f"train.nproc={nproc}"])
                started = time.perf_counter()
                result = train(config, splits, Path(work) / f"model-{nproc}-{round_number}", LINEAGE)
                seconds[nproc].append(time.perf_counter() - started)
                speeds[nproc].append(result.images_per_second)
                print(f"round {round_number + 1}: {nproc} process(es): {result.images_per_second:8.0f} images/s, "
                      f"{seconds[nproc][-1]:5.1f} s wall, validation accuracy {result.best_validation_accuracy:.4f}",
                      flush=True)
    one = statistics.median(speeds[args.nproc[0]])
    summary = {n: {"images_per_second": statistics.median(speeds[n]), "wall_seconds": statistics.median(seconds[n]),
                   "ratio_to_first": statistics.median(speeds[n]) / one} for n in args.nproc}
    print(json.dumps({"device": args.device, "images": args.images, "global_batch": args.batch_size,
                      "results": summary}, indent=2))


if __name__ == "__main__":
    main()
