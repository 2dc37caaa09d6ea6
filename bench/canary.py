"""What a canary costs a request: the same `aimass serve` following an embedded release, side by side in one run,
with no canary, a candidate in the shadow (every request answered again in the background), at weight 50% with
mirroring (the default: the other model answers each request in the background too) and at 50% without it; batch-1
OIP v2 requests from wrk (one thread, a new request id each) at 1 and 16 connections, as bench/serving.py. The
candidate is a second registry version of the same model, so only the routing and the background work differ.

Expectation (issue 25): routing alone (50%, no mirror) keeps the requests/s and p99 of no canary; the background
answers of shadow and mirroring cost CPU the foreground shares on a 2-core machine, and are dropped (counted in
aimass_shadow_dropped_total) rather than queued when they cannot keep up; no request fails in any variant.

    python bench/canary.py --model DIR          # a model directory (with monitor-reference.npz: a registered one)
    python bench/canary.py                      # the newest blessed model under runs/ (from `make run`)
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from serving import (MODEL, PROBE, Measurement, free_port, measure, model_and_seconds, ratios, table,
                     write_wrk_script)

from aimass.canary.controller import plan_canary, start_canary
from aimass.canary.plan import StepResult
from aimass.config import load_config
from aimass.registry import open_registry
from aimass.releases import open_release_backend

CONNECTIONS = (1, 16)
VARIANTS = {  # name -> (weight step, mirror); None: no canary
    "no canary": None,
    "canary: shadow": ((10, 50, 100), True, 0, True),
    "canary: 50%, mirrored (default)": ((50, 100), False, 0, True),
    "canary: 50%, not mirrored": ((50, 100), False, 0, False),
}


def prepare_release(state_dir: Path, model: Path, variant) -> list[str]:
    """A fresh repository whose release serves v1, with v2 beside it as `variant` says; the server's overrides."""
    if state_dir.exists():
        shutil.rmtree(state_dir)
    overrides = [f"data.repo_dir={state_dir}", f"registry.model_name={MODEL}", "serving.capture.sample_rate=0"]
    config = load_config("quick", [*overrides, f"release.canary.mirror={str(variant[3]).lower() if variant else 'true'}"])
    registry = open_registry(config)
    registry.push(model)
    registry.push(model)
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "bench")
    if variant is not None:
        steps, shadow_first, step, _ = variant
        state = plan_canary(backend, registry, "v2", config.release.canary, "bench", steps, shadow_first)
        start_canary(backend, state)
        for _ in range(step):
            state = state.judged(StepResult(state.weight, True, [], {}))
            backend.record_canary(state, "bench step", "bench")
    return [item for override in overrides for item in ("--set", override)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = model_and_seconds(parser)
    model = args.model
    print(f"model: {model}; {os.cpu_count()} CPUs; {args.seconds} s per level; wrk -t1", flush=True)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory() as scratch:
        script = write_wrk_script(Path(scratch), PROBE)
        port = free_port()
        for name, variant in VARIANTS.items():
            state_dir = Path(scratch) / "repo"
            overrides = prepare_release(state_dir, model, variant)
            command = [sys.executable, "-m", "aimass.cli", "serve", "--profile", "quick", "--port", str(port),
                       "--repo", str(state_dir), *overrides]
            _, measured = measure(name, command, f"http://127.0.0.1:{port}", script, args.seconds, PROBE,
                                  connections=CONNECTIONS)
            results += measured
            print("\n".join(table(measured).splitlines()[2:]), flush=True)
    print()
    print(table(results))
    print()
    print(ratios(results, "no canary", prefix="canary"))
    failed = [r for r in results if r.failed]
    if failed:
        raise SystemExit(f"failed requests: {failed}")


if __name__ == "__main__":
    sys.exit(main())
