"""Import and ingest of an image folder: decoding throughput against a plain single-process Pillow loop, and peak
memory at two data set sizes, side by side in one run.

The images are Fashion-MNIST's, written as JPEG files of 56x56 RGB into class folders (so decoding and resizing
are real work); the model input is 32x32 RGB. For each size, one child process runs `aimass data import` (every
file decoded once to check it) and ingest (decoding to the model's input, timed on its own, then splitting and
statistics); its peak resident memory
is reported, and the peak of its whole process tree (it and its decoding workers, sampled every 20 ms from /proc;
a sum that counts pages the processes share once per process, so an upper bound). DVC's hashing of the folder is left out: it is DVC's work, not
aimass's. A plain loop (open, convert, resize, one process) decodes the same files first as the reference.

    python bench/ingest.py                         # 10,000 and 100,000 images
    python bench/ingest.py --sizes 2000 20000      # quicker
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
from pathlib import Path
from aimass.config import load_config
from aimass.ingestion.stage import _write_splits
from aimass.data.decoding import decode_data_version
from aimass.data.importing import import_dataset

source, work = Path(sys.argv[1]), Path(sys.argv[2])
config = load_config("quick", [f"data.repo_dir={work}", "data.image_size=32", "data.channels=3"])
md5 = "bench" + "0" * 27 + ".dir"
started = time.perf_counter()
import_dataset(source, work / "data")
imported = time.perf_counter()
decode_data_version(work / "data", md5, config.data, work / "cache")  # what ingest does first
decoded = time.perf_counter()
_write_splits(config, work, md5, work / "splits", work / "cache")  # the rest of ingest, on the cached arrays
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "decode_s": decoded - imported, "split_and_describe_s": done - decoded,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_folder(root: Path, count: int) -> Path:
    """`count` Fashion-MNIST images as 56x56 RGB JPEG files in class folders under `root`."""
    from PIL import Image

    from aimass.data.idx import find_idx_files, read_idx_split

    files = find_idx_files(Path(os.environ.get("AIMASS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")))
    images, labels = read_idx_split(*files["train"])
    for index in range(count):
        folder = root / f"class-{labels[index % len(labels)]}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(images[index % len(images)]).resize((56, 56)).convert("RGB")
        image.save(folder / f"{index:06d}.jpg", quality=90)
    return root


def plain_pillow_images_per_second(root: Path, limit: int) -> float:
    """The reference: one process, each file opened, converted and resized in turn, into one array."""
    from PIL import Image

    paths = sorted(root.rglob("*.jpg"))[:limit]
    out = np.empty((len(paths), 3, 32, 32), dtype=np.uint8)
    started = time.perf_counter()
    for position, path in enumerate(paths):
        with Image.open(path) as image:
            out[position] = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    return len(paths) / (time.perf_counter() - started)


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, from /proc (0 for processes that are gone)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def measure(source: Path, work: Path) -> dict:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(source), str(work)], stdout=subprocess.PIPE,
                             text=True, cwd=REPO_ROOT)
    tree_peak = 0.0
    while child.poll() is None:
        tree_peak = max(tree_peak, tree_rss_mib(child.pid))
        time.sleep(0.02)
    if child.returncode != 0:
        raise SystemExit(f"the import + ingest child failed with exit code {child.returncode}")
    return {**json.loads(child.stdout.read().strip().splitlines()[-1]), "tree_peak_rss_mib": tree_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000])
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="aimass-bench-ingest-") as scratch:
        for size in args.sizes:
            source = write_folder(Path(scratch) / f"source-{size}", size)
            reference = plain_pillow_images_per_second(source, min(size, 5_000))
            figures = measure(source, Path(scratch) / f"work-{size}")
            figures["decode_images_per_s"] = size / figures["decode_s"]
            figures["plain_pillow_images_per_s"] = reference
            figures["decode_over_plain_pillow"] = figures["decode_images_per_s"] / reference
            rows[size] = {key: round(value, 2) for key, value in figures.items()}
    small, large = args.sizes
    summary = {"cpus": cpus, "sizes": rows,
               "peak_rss_ratio_large_over_small": round(rows[large]["peak_rss_mib"] / rows[small]["peak_rss_mib"], 3),
               "tree_rss_ratio_large_over_small":
                   round(rows[large]["tree_peak_rss_mib"] / rows[small]["tree_peak_rss_mib"], 3)}
    for size, figures in rows.items():
        print(f"{size:>8} images: " + ", ".join(f"{key} {value}" for key, value in figures.items()))
    print(f"peak RSS {large} / {small} images: {summary['peak_rss_ratio_large_over_small']}x (target <= 1.5x); "
          f"process tree {summary['tree_rss_ratio_large_over_small']}x")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
