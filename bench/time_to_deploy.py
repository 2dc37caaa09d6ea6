"""Time to a deployed model, three ways side by side in one run:

1. the whole DAG through kfp.local, each step in its own subprocess, as `aimass run` runs it;
2. the same stages called as plain functions in this one process (ingest, validate, augment, train, compress,
   evaluate, bless, deploy): the DAG's time over this one is the orchestration overhead (target <= 1.15x);
3. a bare PyTorch loop training the same model on the same splits until its test accuracy reaches the target
   (measured every `--check-every` steps; the checks are not counted): the "no pipeline at all" reference.

Each deploys into its own registry and release history under a temporary folder. Set-up and `aimass data import`
are not counted (run `aimass data import` first). Figures go in docs/PERFORMANCE.md.

    python bench/time_to_deploy.py                       # quick profile, CPU, target 0.91
    python bench/time_to_deploy.py --in-process-first    # the other order: the first variant meets cold file caches
    python bench/time_to_deploy.py --profile full --target 0.93 --set train.device=cuda   # on a GPU machine
"""
import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aimass.augmentation.stage import augment
from aimass.compression.stage import compress
from aimass.deployment.stage import deploy
from aimass.evaluation.stage import evaluate
from aimass.ingestion.stage import ingest
from aimass.evaluation.blessing import bless
from aimass.training.devices import configure_cpu_threads, FastPath, select_device
from aimass.training.stage import train
from aimass.validation.report import raise_for_failures
from aimass.validation.stage import validate_data
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard
from aimass.data.preprocess import to_model_input
from aimass.lineage import Lineage
from aimass.models.architecture import Signature, build_classifier, predict_probabilities
from aimass.pipelines.local_run import run_pipeline_locally

REPO_ROOT = Path(__file__).resolve().parent.parent


def isolated_config(profile: str, overrides: list[str], home: Path):
    """The profile with its own registry and release history, so the bench never touches the user's."""
    return load_config(profile, [f"data.repo_dir={REPO_ROOT}", f"registry.local_dir={home / 'model-registry'}",
                                 f"release.state_dir={home / 'releases'}", *overrides])


@contextlib.contextmanager
def cold_compile_cache(home: Path):
    """torch.compile's on-disk cache in a folder of this variant's own, so the second variant does not reuse the
    kernels the first compiled (the decoded-data cache is warm for both: `aimass data import` filled it)."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(home / "inductor-cache")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def run_dag(config, work: Path) -> dict:
    started = time.perf_counter()
    result = run_pipeline_locally(config, work / "runs", git_commit="bench", verbose=False)
    seconds = time.perf_counter() - started
    if not result.succeeded:
        raise SystemExit(f"the DAG failed at {result.failed_step}; see {work / 'runs'}")
    smoke = result.artifact("deploy", "smoke_metrics") or {}
    return {"seconds": round(seconds, 1), "steps": {step.name: round(step.seconds, 1) for step in result.steps
                                                    if step.seconds is not None},
            "served_accuracy": smoke.get("metadata", {}).get("smoke_test_accuracy")}


def run_in_process(config, work: Path) -> dict:
    """The stages as plain functions, in the order the DAG runs them."""
    lineage = Lineage(data_md5="bench", git_commit="bench", run_id="bench", run_name="time-to-deploy")
    splits, training_set, model = work / "splits", work / "training-set", work / "model"
    candidates, blessed = work / "candidates", work / "blessed"
    steps: dict[str, float] = {}

    def timed(name, function, *args, **kwargs):
        started = time.perf_counter()
        value = function(*args, **kwargs)
        steps[name] = round(time.perf_counter() - started, 1)
        return value

    timed("ingest", ingest, config, splits)
    timed("validate-data", lambda: raise_for_failures(validate_data(config, splits, work / "validation")))
    timed("augment", augment, config, splits, training_set)
    timed("train", train, config, splits, model, lineage, training_set_dir=training_set)
    timed("compress", compress, config, model, splits, candidates)
    outcome = timed("evaluate", evaluate, config, model, candidates, splits)
    if not outcome.decision.passed:
        raise SystemExit(f"the gate rejected the model: {outcome.decision.reasons}")
    timed("bless-model", bless, model, candidates, outcome.choice.chosen, blessed)
    deployed = timed("deploy", deploy, config, blessed, splits, outcome.evaluation.headline(), "bench")
    return {"seconds": round(sum(steps.values()), 1), "steps": steps, "chosen": outcome.choice.chosen,
            "test_accuracy": round(outcome.evaluation.accuracy, 4), "served_accuracy": deployed.smoke.accuracy}


def bare_loop_time_to(config, splits_dir: Path, target: float, check_every: int, max_steps: int) -> dict:
    """The plainest loop training the same model (SGD + Nesterov, the same batch and learning rate, one-cycle
    schedule over `max_steps`): training seconds until its test accuracy first reaches `target`."""
    settings = config.train
    device = select_device(settings.device)
    configure_cpu_threads(settings.cpu_threads)
    splits, _ = load_image_sets(splits_dir)
    signature = Signature.of_splits(SplitsCard.read(splits_dir))
    spec = signature.input_spec
    x = to_model_input(np.array(splits["train"].images), spec, device)
    y = torch.from_numpy(splits["train"].labels).long().to(device)
    torch.manual_seed(settings.seed)
    fast_path = FastPath.for_device(settings.fast_path, device)  # the train stage's precision and layout
    model = build_classifier(config.model, signature).to(device, memory_format=fast_path.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum,
                                nesterov=True, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.learning_rate, total_steps=max_steps,
                                                   pct_start=settings.warmup_fraction, cycle_momentum=False)
    trained, step, accuracy = 0.0, 0, 0.0
    while step < max_steps:
        started = time.perf_counter()
        model.train()
        for _ in range(check_every):
            batch = torch.randint(0, len(y), (settings.batch_size,), device=device)
            with fast_path.autocast():
                logits = model(fast_path.layout(x[batch]))
            loss = F.cross_entropy(logits.float(), y[batch], label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        trained += time.perf_counter() - started
        step += check_every
        test = splits["test"]
        scoring = model.cpu().to(memory_format=torch.contiguous_format)
        accuracy = float((predict_probabilities(scoring, test.images, spec).argmax(1) == test.labels).mean())
        model.to(device, memory_format=fast_path.memory_format)
        if accuracy >= target:
            break
    return {"seconds": round(trained, 1) if accuracy >= target else None, "steps": step,
            "test_accuracy": round(accuracy, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--target", type=float, default=0.91, help="test accuracy the deployed model must reach")
    parser.add_argument("--check-every", type=int, default=100, help="bare loop: steps between test checks")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--in-process-first", action="store_true",
                        help="run the one-process variant before the DAG (the first one meets cold file caches)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        config = isolated_config(args.profile, args.overrides, work / "in-process")
        variants = ["dag", "in-process"][::-1 if args.in_process_first else 1]
        for variant in variants:
            with cold_compile_cache(work / variant):
                if variant == "dag":
                    dag = run_dag(isolated_config(args.profile, args.overrides, work / "dag"), work / "dag")
                    print("DAG:", json.dumps(dag), flush=True)
                else:
                    stages = run_in_process(config, work / "in-process")
                    print("in process:", json.dumps(stages), flush=True)
        bare = bare_loop_time_to(config, work / "in-process" / "splits", args.target, args.check_every,
                                 max_steps=4 * (config.train.steps or 1_000))
        print("bare loop:", json.dumps(bare), flush=True)
    summary = {"profile": args.profile, "target": args.target, "order": variants, "dag_seconds": dag["seconds"],
               "in_process_seconds": stages["seconds"],
               "orchestration_overhead": round(dag["seconds"] / stages["seconds"], 2),
               "dag_served_accuracy": dag["served_accuracy"], "bare_loop_seconds_to_target": bare["seconds"],
               "dag_vs_bare_loop": round(dag["seconds"] / bare["seconds"], 2) if bare["seconds"] else None,
               "meets_240_s": dag["seconds"] <= 240 and (dag["served_accuracy"] or 0) >= args.target}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
