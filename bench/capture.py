"""What capture and the live monitor cost a request: the same `aimass serve` and model, side by side in one run,
with capture off, capturing every request (`serving.capture.sample_rate=1.0`) into a folder, and capturing every
request into an S3 endpoint where nothing listens (every batch fails and is dropped), plus the server with the
monitor off as well; batch-1 OIP v2 requests from wrk (one thread) at 1 and 16 connections, as bench/serving.py.

Target (issue 24): at 16 connections, capture at sample_rate 1.0 keeps at least 0.95x the requests/s of capture
off and at most 1.1x its p99; with a dead store, no request fails.

    python bench/capture.py --model DIR          # a model directory (with monitor-reference.npz: a registered one)
    python bench/capture.py                      # the newest blessed model under runs/ (from `make run`)
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

from serving import (PROBE, Measurement, free_port, measure, model_and_seconds, ratios, server_commands, table,
                     write_wrk_script)

CONNECTIONS = (1, 16)


def variants(model: Path, port: int, state_dir: Path) -> dict[str, list[str]]:
    base = server_commands(model, port, state_dir)["aimass (default: dynamic batching)"]
    dead_store = f"127.0.0.1:{free_port()}"
    return {
        "capture off, monitor off": [*base, "--set", "serving.capture.sample_rate=0",
                                     "--set", "serving.monitor.enabled=false"],
        "capture off": [*base, "--set", "serving.capture.sample_rate=0"],
        "capture 1.0 to a folder": [*base, "--set", "serving.capture.sample_rate=1.0",
                                    "--set", f"serving.capture.uri={state_dir / 'capture'}"],
        "capture 1.0 to a dead S3 store": [*base, "--set", "serving.capture.sample_rate=1.0",
                                           "--set", "serving.capture.uri=s3://capture/bench",
                                           "--set", f"registry.s3_endpoint={dead_store}",
                                           "--set", "registry.s3_secure=false"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = model_and_seconds(parser)
    model = args.model
    print(f"model: {model}; {os.cpu_count()} CPUs; {args.seconds} s per level; wrk -t1", flush=True)
    os.environ.setdefault("AIMASS_S3_ACCESS_KEY", "bench-not-a-secret")  # the dead store needs some credentials
    os.environ.setdefault("AIMASS_S3_SECRET_KEY", "bench-not-a-secret")
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory() as state_dir:
        script = write_wrk_script(Path(state_dir), PROBE)
        port = free_port()
        for name, command in variants(model, port, Path(state_dir)).items():
            _, measured = measure(name, command, f"http://127.0.0.1:{port}", script, args.seconds, PROBE,
                                  connections=CONNECTIONS)
            results += measured
            print("\n".join(table(measured).splitlines()[2:]), flush=True)
        written = sum(1 for path in (Path(state_dir) / "capture").rglob("*.jsonl") for _ in path.open("rb"))
    print(f"\ncaptured records written to the folder: {written}\n")
    print(table(results))
    print()
    print(ratios(results, "capture off", prefix="capture"))
    print()
    print(ratios(results, "capture off, monitor off", prefix="capture"))
    failed = [r for r in results if r.failed]
    if failed:
        raise SystemExit(f"failed requests: {failed}")


if __name__ == "__main__":
    sys.exit(main())
