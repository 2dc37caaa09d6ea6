"""Trials per hour of the hyper-parameter search on this machine, one trial at a time and two at once.

The search's own functions (aimass/training/hpo.py: plan_round, run_trial) run a TPE search over the learning rate and
dropout with `hpo.trial_epochs` epochs per trial on a stratified subset of the training images. "Two at once" runs
two trials side by side in separate processes, each with half the CPUs, as `hpo.parallelism=2` does on one node.

    python bench/hpo_trials.py                      # CPU, 12,000 images, 1 epoch per trial, 6 trials
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from aimass.training.hpo import plan_round, run_trial
from aimass.ingestion.stage import ingest
from aimass.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
SPACE = "{train.learning_rate: {low: 0.01, high: 0.3, log: true}, model.dropout: {low: 0.0, high: 0.3}}"


def settings(images: int, trials: int, parallelism: int, epochs: int, threads: int):
    return load_config("quick", [f"data.repo_dir={REPO_ROOT}", f"split.train_limit={images}", "hpo.strategy=tpe",
                                 f"hpo.trials={trials}", f"hpo.parallelism={parallelism}", f"hpo.trial_epochs={epochs}",
                                 f"hpo.space={SPACE}", f"train.cpu_threads={threads}"])


def one_trial(arguments):
    config_json, splits, number, params = arguments
    from aimass.config import AimassConfig

    return run_trial(AimassConfig.from_json(config_json), Path(splits), None, number, params, [])


def search(config, splits: Path, parallel: int) -> tuple[float, list]:
    history, started = [], time.perf_counter()
    with ProcessPoolExecutor(max_workers=parallel) as pool:
        while len(history) < config.hpo.trials:
            batch = plan_round(config.hpo, history)
            history += list(pool.map(one_trial, [(config.to_json(), str(splits), t["number"], t["params"])
                                                 for t in batch]))
    return time.perf_counter() - started, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_000)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    results = {}
    with tempfile.TemporaryDirectory() as work:
        splits = Path(work) / "splits"
        ingest(settings(args.images, args.trials, 1, args.epochs, cpus), splits)
        for parallel in (1, 2):
            config = settings(args.images, args.trials, parallel, args.epochs, max(1, cpus // parallel))
            seconds, history = search(config, splits, parallel)
            results[f"{parallel} at once"] = {
                "seconds": round(seconds, 1), "trials_per_hour": round(3600 * len(history) / seconds),
                "median_trial_seconds": round(statistics.median(t.seconds for t in history), 1),
                "best_validation_accuracy": max(t.value for t in history if t.value is not None)}
            print(f"{parallel} at once: {len(history)} trials in {seconds:.0f} s", flush=True)
    print(json.dumps({"images": args.images, "trial_epochs": args.epochs, "cpus": cpus, "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
