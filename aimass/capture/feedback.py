"""Labels for answered requests: the one parser of feedback items (the server's `POST .../feedback` body and each
line of an imported JSONL file), and the bulk import of labels that arrive later (`aimass feedback import`)."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import orjson

from aimass.capture.records import FEEDBACK, Label, check_request_id, label_line
from aimass.capture.store import CaptureStore, replica_name
from aimass.errors import AimassError

USAGE = ('{"id": "<request id>", "label": "<class name>"}, {"id": ..., "labels": [one per image of the request]} '
         'or {"feedback": [those]}')
SHOWN_PROBLEMS = 10


class InvalidFeedback(AimassError, ValueError):
    """Feedback that is not a label for a request: no id, no label, not JSON, an unknown class."""


def parse_feedback_body(body: bytes) -> list[tuple[str, list[str]]]:
    """A feedback request's body as (request id, labels) pairs.

    Raises:
        InvalidFeedback: saying what is missing or malformed.
    """
    try:
        values = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidFeedback(f"the feedback body is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise InvalidFeedback(f"the feedback body must be a JSON object: {USAGE}")
    if "feedback" not in values:
        return [parse_feedback_item(values, "the feedback")]
    items = values["feedback"]
    if not isinstance(items, list) or not items:
        raise InvalidFeedback(f'"feedback" must be a non-empty list: {USAGE}')
    return [parse_feedback_item(item, f"feedback item {position}") for position, item in enumerate(items)]


def parse_feedback_item(item: Any, where: str) -> tuple[str, list[str]]:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        raise InvalidFeedback(f'{where} has no "id" (the answered request\'s id, as its response and x-request-id '
                              f"header gave it): send {USAGE}")
    try:
        check_request_id(item["id"])
    except ValueError as error:
        raise InvalidFeedback(f"{where}: {error}") from None
    if "labels" in item:
        names = item["labels"]
    elif "label" in item:
        names = [item["label"]]
    else:
        raise InvalidFeedback(f'{where} has no "label" (the true class name) or "labels": send {USAGE}')
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        raise InvalidFeedback(f'{where}: "label" must be a class name and "labels" a non-empty list of class names')
    return item["id"], names


def read_feedback_file(path: Path) -> list[tuple[str, list[str]]]:
    """Labels from a CSV file with the columns `id,label` (one image per request) or a JSONL file of feedback items.

    Raises:
        InvalidFeedback: naming the rows at fault (the first ten and a count); nothing is imported then.
    """
    if not path.is_file():
        raise InvalidFeedback(f"{path} does not exist: give a CSV file (id,label) or a JSONL file of "
                              '{"id", "label"} objects')
    text = path.read_text(encoding="utf-8-sig")
    items, problems = [], []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(parse_feedback_item(orjson.loads(line), f"line {number}"))
            except orjson.JSONDecodeError:
                problems.append(f"line {number}: not JSON")
            except InvalidFeedback as error:
                problems.append(str(error).split(": send")[0])
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
            raise InvalidFeedback(f"{path}: a CSV file of labels needs the columns id,label (found "
                                  f"{','.join(reader.fieldnames or []) or 'none'})")
        for number, row in enumerate(reader, start=2):
            try:
                items.append(parse_feedback_item({"id": row["id"], "label": row["label"]}, f"row {number}"))
            except InvalidFeedback as error:
                problems.append(str(error).split(": send")[0])
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        raise InvalidFeedback(f"{path}: {len(problems)} rows are not labels: {shown}{more}; nothing was imported")
    if not items:
        raise InvalidFeedback(f"{path} holds no labels")
    return items


def import_feedback(items: list[tuple[str, list[str]]], class_names: list[str] | tuple[str, ...],
                    store: CaptureStore) -> str:
    """Write the labels as one feedback file beside the server's; returns its key. `aimass monitor` joins them to
    the captured requests of every replica.

    Raises:
        InvalidFeedback: a label is not one of `class_names` (nothing is written).
    """
    unknown = sorted({name for _, names in items for name in names} - set(class_names))
    if unknown:
        raise InvalidFeedback(f"unknown classes {', '.join(map(repr, unknown[:SHOWN_PROBLEMS]))}; the model's classes "
                              f"are {', '.join(class_names)}; nothing was imported")
    now = time.time()
    data = b"".join(label_line(Label(request_id, now, tuple(names), None, "import")) for request_id, names in items)
    return store.write(FEEDBACK, f"import-{replica_name()}", 1, data, at=now)
