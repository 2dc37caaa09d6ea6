"""Teacher vs every compression candidate on the CPU, side by side in one run, with the issue's targets checked.

Builds the candidates with the compress stage itself (the same code the pipeline runs), which profiles the teacher
and each candidate one after another in this process: size on disk, test accuracy, batch-1 p50/p99 latency and
batch-64 throughput. Then applies the compression-aware choice and reports the chosen candidate against the
targets: >= 4x smaller, >= 2x the teacher's batch-64 throughput, <= 0.5 points accuracy drop.

    python bench/compression.py                           # newest teacher under runs/ (from `make run`)
    python bench/compression.py --teacher DIR --splits DIR
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from aimass.compression.profiles import profiles_markdown
from aimass.compression.stage import compress
from aimass.gates import choose_candidate
from aimass.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def newest(pattern: str) -> Path:
    found = sorted(REPO_ROOT.glob(pattern), key=lambda path: path.stat().st_mtime)
    if not found:
        raise SystemExit(f"nothing matches runs/{pattern.removeprefix('runs/')}: run `make run` first, or pass "
                         "--teacher and --splits")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, help="a trained model directory (default: newest under runs/)")
    parser.add_argument("--splits", type=Path, help="the ingest output it was trained on (default: same run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    teacher = args.teacher or newest("runs/*/*/train-component/model")
    splits = args.splits or teacher.parent.parent / "ingest-component" / "splits"
    config = load_config("quick", ["compress.time_every_candidate=true", *args.overrides])

    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        profiles = compress(config, teacher, splits, Path(work) / "candidates")
        seconds = time.perf_counter() - started
    print(profiles_markdown(profiles))
    teacher_profile, candidates = profiles[0], profiles[1:]
    choice = choose_candidate(teacher_profile, candidates, config.gate)
    for name, verdicts in choice.verdicts.items():
        print(f"{name}: {'; '.join(verdicts)}")
    summary = {"teacher": str(teacher), "seconds": round(seconds), "chosen": choice.chosen}
    if choice.chosen != "teacher":
        chosen = next(p for p in candidates if p.name == choice.chosen)
        summary.update({
            "size_ratio": round(teacher_profile.size_bytes / chosen.size_bytes, 2),
            "throughput_ratio_b64": round(chosen.throughput_b64 / teacher_profile.throughput_b64, 2),
            "accuracy_drop_points": round(100 * (teacher_profile.accuracy - chosen.accuracy), 2),
            "latency_p50_ratio": round(chosen.latency_p50_ms / teacher_profile.latency_p50_ms, 2),
        })
        summary["meets_targets"] = (summary["size_ratio"] >= 4 and summary["throughput_ratio_b64"] >= 2
                                    and summary["accuracy_drop_points"] <= 0.5)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
