"""What every pipeline step pays before and after its work: a fresh process as KFP starts it (`_KFP_RUNTIME=true`)
imports kfp's executor and the stage's module, then shuts down. Per stage, the median of `--rounds` processes:
the import, the whole process, and the whole process again with Python's usual shutdown (the garbage collection a
step process skips, components/base.py), side by side.

    python bench/step_startup.py            # figures in docs/PERFORMANCE.md
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STAGES = ("ingest", "validate_data", "augment", "train", "compress", "evaluate", "promote", "deploy")
CHILD = """
import time
started = time.perf_counter()
import kfp.dsl.executor_main, aimass.components.{stage}
print(time.perf_counter() - started)
{shutdown}
"""
USUAL_SHUTDOWN = "import atexit, gc; atexit.unregister(gc.freeze)"


def one_process(stage: str, usual_shutdown: bool) -> tuple[float, float]:
    """(import seconds, whole-process seconds)."""
    code = CHILD.format(stage=stage, shutdown=USUAL_SHUTDOWN if usual_shutdown else "")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "_KFP_RUNTIME": "true"})
    return float(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = {}
    for stage in STAGES:
        samples = {False: [], True: []}
        for _ in range(args.rounds):  # alternating, so a busy moment hits both variants
            for usual in (False, True):
                samples[usual].append(one_process(stage, usual))
        rows[stage] = {"import_s": round(statistics.median(s[0] for s in samples[False]), 2),
                       "process_s": round(statistics.median(s[1] for s in samples[False]), 2),
                       "process_with_usual_shutdown_s": round(statistics.median(s[1] for s in samples[True]), 2)}
        print(f"{stage:14} {json.dumps(rows[stage])}", flush=True)
    print(json.dumps({"total_process_s": round(sum(r["process_s"] for r in rows.values()), 1),
                      "total_with_usual_shutdown_s": round(sum(r["process_with_usual_shutdown_s"]
                                                               for r in rows.values()), 1)}))


if __name__ == "__main__":
    main()
