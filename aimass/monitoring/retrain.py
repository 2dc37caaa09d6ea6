"""The automatic response to a breach (`aimass monitor --retrain`): a new data version holding what production now
sees, and a validated retraining run on it, with the breach recorded in the new model's lineage.

    1. Labelled captured images (a captured request with a label for each of its images) are written as image files
       under `data/images/captured/<class>/` beside the pinned data set, listed in index.jsonl, checked with the
       import's own code (every file must decode). A share (`monitor.captured_test_share`, chosen by request id, so
       the same image always lands in the same split) joins the test split when the data set has one of its own,
       so the gate measures the new model on production's images too; the rest join train.
    2. The data directory is replaced in one rename, pinned in data.dvc, and pushed when a DVC remote is set.
    3. The run: locally the same DAG as `aimass run`; on a cluster (`--cluster`) a KFP run through `aimass submit`'s
       code. Drift against the production model is why this run exists, so validation does not refuse the new
       version for it (`validation.drift_against_production=false`); skew between its own splits is still checked.
       The lineage records `trigger: monitor` and `trigger_reason`.
A cooldown (`monitor.cooldown`) and a record of the run in flight, both kept in the capture store beside the
captured traffic (so every CronJob pod sees them), make a second call start nothing and say why.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aimass.atomic import atomic_directory
from aimass.capture.store import CaptureStore
from aimass.config import AimassConfig
from aimass.data.card import IMAGES_DIR, INDEX_FILE, DataCard, read_index
from aimass.errors import AimassError
from aimass.monitoring.report import Breach, CaptureRead, parse_duration

STATE_FILE = "retraining.json"
CAPTURED_DIR = f"{IMAGES_DIR}/captured"
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "PPM": ".ppm"}


class RetrainingRefused(AimassError):
    """A breach was found but no retraining was started (cooldown, a run in flight, nothing labelled to learn)."""


@dataclass(frozen=True)
class RetrainingData:
    data_md5: str
    added: dict[str, int]  # split -> captured images added by this call
    skipped: int  # labelled images that could not be added (unknown class, undecodable)


def trigger_reason(breaches: list[Breach], since: str) -> str:
    return f"{'; '.join(breach.sentence() for breach in breaches)} (aimass monitor --since {since})"


def check_may_start(store: CaptureStore, config: AimassConfig, is_running: Callable[[dict], bool],
                    now: float | None = None) -> None:
    """Raises RetrainingRefused during the cooldown after the last start, or while its run is still in flight."""
    now = time.time() if now is None else now
    state = store.read_state(STATE_FILE)
    if not state:
        return
    if state.get("status") == "running" and is_running(state):
        raise RetrainingRefused(f"a retraining run is in flight ({state.get('run')}, started "
                                f"{_ago(now - state['started'])} ago): nothing started")
    cooldown = parse_duration(config.monitor.cooldown)
    if now - state.get("started", 0) < cooldown:
        raise RetrainingRefused(f"cooldown: the last retraining started {_ago(now - state['started'])} ago "
                                f"(monitor.cooldown {config.monitor.cooldown}; it ended {state.get('status')}): "
                                "nothing started")


def local_run_is_alive(state: dict) -> bool:
    """Whether the local `aimass monitor --retrain` process recorded in `state` still runs on this machine."""
    pid = state.get("pid")
    if not isinstance(pid, int) or state.get("host") != os.uname().nodename:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_start(store: CaptureStore, run: str, reason: str, data_md5: str, extra: dict | None = None) -> None:
    store.write_state(STATE_FILE, {"status": "running", "started": time.time(), "run": run, "reason": reason,
                                   "data_md5": data_md5, "host": os.uname().nodename, "pid": os.getpid(),
                                   **(extra or {})})


def record_end(store: CaptureStore, status: str) -> None:
    state = store.read_state(STATE_FILE)
    store.write_state(STATE_FILE, {**state, "status": status, "ended": time.time()})


def build_retraining_data(config: AimassConfig, repo: Path, read: CaptureRead) -> RetrainingData:
    """Add the labelled captured images of `read` to the data set in `repo` and pin the new version.

    Raises:
        RetrainingRefused: no captured image has a label (there is nothing new to learn from).
    """
    from aimass.data.importing import inspect_images
    from aimass.data.versions import push_data, track_data

    data_dir = repo / config.data.dataset_dir
    card = DataCard.read(data_dir)
    existing = read_index(data_dir)
    before = frozenset(row["file"] for row in existing)
    known = set(before)
    has_own_test = "test" in card.splits
    staged, skipped = [], 0
    for request in read.requests:
        label = read.labels.get(request.request_id)
        if label is None or len(label.labels) != request.count:
            continue
        for position, name in enumerate(label.labels):
            if name not in card.class_names:
                skipped += 1
                continue
            encoded, extension = _image_file(request, position)
            if extension is None:
                skipped += 1
                continue
            digest = hashlib.sha256(f"{request.request_id}/{position}".encode()).hexdigest()[:20]
            relative = f"{CAPTURED_DIR}/{name}/{digest}{extension}".replace(" ", "_")
            if relative in known:
                continue
            known.add(relative)
            held_out = has_own_test and zlib.crc32(request.request_id.encode()) < \
                config.monitor.captured_test_share * 2**32
            staged.append((relative, encoded, card.class_names.index(name), "test" if held_out else "train"))
    if not staged:
        raise RetrainingRefused("no captured image has a label, so a retraining would learn nothing new: send "
                                "labels (POST /v2/models/NAME/feedback, or `aimass feedback import FILE`) and run "
                                "`aimass monitor --retrain` again")
    with atomic_directory(data_dir) as staging:
        shutil.copytree(data_dir, staging, dirs_exist_ok=True)
        for relative, encoded, _, _ in staged:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_bytes(encoded)
        inspected = inspect_images([staging / relative for relative, *_ in staged])
        rows = list(existing)
        for (relative, _, label, split), outcome in zip(staged, inspected):
            if isinstance(outcome, str):  # undecodable: it never becomes part of the data set
                (staging / relative).unlink()
                skipped += 1
                continue
            width, height, channels = outcome
            rows.append({"file": relative, "label": label, "split": split, "width": width, "height": height,
                         "channels": channels})
        rows.sort(key=lambda row: (row["split"], row["file"]))
        with open(staging / INDEX_FILE, "w", encoding="utf-8") as index:
            index.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        added = Counter(row["split"] for row in rows if row["file"] not in before)
        captured = Counter(row["split"] for row in rows if row["file"].startswith(CAPTURED_DIR))
        splits = dict(card.splits)
        if card.layout == "idx":
            for split, count in added.items():
                splits[split] = splits.get(split, 0) + count
        else:
            splits = dict(sorted(Counter(row["split"] for row in rows).items()))
        replace(card, splits=splits, captured_images=dict(sorted(captured.items()))).write(staging)
    md5 = track_data(repo, config.data.dataset_dir)
    if config.data.remote_url:
        push_data(repo, config.data)
    return RetrainingData(md5, dict(sorted(added.items())), skipped)


def _image_file(request, position: int) -> tuple[bytes, str | None]:
    """The bytes of a captured image as a file, and its extension (None: not an image format aimass imports)."""
    from PIL import Image

    if request.encoded is not None:
        data = request.encoded[position]
        try:
            with Image.open(io.BytesIO(data)) as image:
                return data, _EXTENSIONS.get(image.format)
        except Exception:  # noqa: BLE001 (a file Pillow cannot even identify is left out)
            return data, None
    pixels = request.pixels[position]  # (C, H, W) uint8
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def _ago(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
