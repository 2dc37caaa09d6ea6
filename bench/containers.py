"""The DAG with every step in a container of the project image against the same DAG in subprocesses, side by side
in one run, and the image build with a warm cache. Figures go in docs/PERFORMANCE.md.

Each variant deploys into its own registry and release history under a temporary folder and compiles its kernels
into a cold torch.compile cache of its own; the decoded-data cache is warm for both (run `aimass data import`
first). Needs a container engine and the image (`make image`); the bench also times a rebuild with nothing changed
(a code change rebuilds only the source's layer: 15 s here).

    python bench/containers.py                  # tiny profile
    python bench/containers.py --profile quick
"""
import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from aimass.config import load_config
from aimass.pipelines.local_run import run_pipeline_locally

REPO_ROOT = Path(__file__).resolve().parent.parent


def timed_build() -> float:
    started = time.perf_counter()
    subprocess.run([str(REPO_ROOT / "scripts" / "build-image.sh")], check=True, capture_output=True)
    return time.perf_counter() - started


def timed_run(profile: str, runner: str, home: Path):
    config = load_config(profile, [f"data.repo_dir={REPO_ROOT}", f"registry.local_dir={home / 'model-registry'}",
                                   f"release.state_dir={home / 'releases'}",
                                   f"serving.cache_dir={home / 'serving-cache'}"])
    # Each variant compiles its kernels from scratch (the steps' containers mount this cache too).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(home / "inductor-cache")
    started = time.perf_counter()
    result = run_pipeline_locally(config, home / "runs", "bench", verbose=False, runner=runner)
    seconds = time.perf_counter() - started
    if not result.succeeded:
        raise SystemExit(f"the {runner} run failed at {result.failed_step}: see {home / 'runs'}")
    return seconds, {step.name: step.seconds for step in result.steps if step.seconds is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--skip-build", action="store_true", help="do not time the cached image build")
    arguments = parser.parse_args()
    if not arguments.skip_build:
        print(f"image build, cache warm: {timed_build():.1f} s")
    figures = {}
    for runner in ("subprocess", "docker"):
        with tempfile.TemporaryDirectory(prefix=f"aimass-bench-{runner}-") as home:
            Path(home).chmod(0o755)
            figures[runner] = timed_run(arguments.profile, runner, Path(home))
    (process_total, process_steps), (container_total, container_steps) = figures["subprocess"], figures["docker"]
    print(f"\n{arguments.profile} DAG to a deployed model")
    print(f"{'step':<14}{'subprocess s':>14}{'container s':>14}{'ratio':>8}")
    for step, seconds in process_steps.items():
        in_container = container_steps.get(step)
        if in_container is not None:
            print(f"{step:<14}{seconds:>14.1f}{in_container:>14.1f}{in_container / seconds:>8.2f}")
    print(f"{'whole DAG':<14}{process_total:>14.1f}{container_total:>14.1f}{container_total / process_total:>8.2f}")


if __name__ == "__main__":
    main()
