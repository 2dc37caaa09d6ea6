"""`aimass monitor` reads back what every replica captured, says in its last line whether anything breached, and with
--retrain answers a breach with a validated retraining on the labelled captured images, once per cooldown."""
import json

import httpx
import numpy as np
import pytest
from conftest import copy_tree

from aimass.capture.records import REQUESTS
from aimass.capture.store import open_capture_store
from aimass.cli import main
from aimass.config import load_config
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, running_server
from aimass.serving.client import tensor_request

MODEL = "fashion-mnist"


def serve_and_send(config, images, labels=None, prefix="req", batch=50):
    """Traffic through a real server with capture on; labels (class indices), when given, come back as feedback."""
    with running_server(MODEL, ReleaseSource(config), config) as running:
        names = running.holder.current.class_names
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            body = tensor_request(chunk, request_id=f"{prefix}-{start}")
            assert httpx.post(f"{running.url}/v2/models/{MODEL}/infer", json=body).status_code == 200
            if labels is not None:
                answer = httpx.post(f"{running.url}/v2/models/{MODEL}/feedback", json={
                    "id": f"{prefix}-{start}", "labels": [names[k] for k in labels[start:start + batch]]})
                assert answer.status_code == 200, answer.text


def release(config, model_dir, test_accuracy):
    registry = open_registry(config)
    registry.push(model_dir, metrics={"accuracy": test_accuracy})
    open_release_backend(config, registry).deploy("v1", "test")
    registry.promote("v1", "production")
    return registry


def monitor(repo, capsys, *arguments):
    code = main(["monitor", "--profile", "tiny", "--repo", str(repo), "--set", f"registry.model_name={MODEL}",
                 "--set", "serving.monitor.window=500", *arguments])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, lines


@pytest.fixture
def repo(tmp_path, monitored_model_dir, tiny_teacher):
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", f"registry.model_name={MODEL}"])
    release(config, monitored_model_dir, tiny_teacher[1].history[-1].validation_accuracy)
    return tmp_path


@pytest.fixture
def config(repo):
    return load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}",
                                "serving.capture.flush_seconds=0.2"])


def test_held_out_traffic_is_no_breach_and_the_report_is_written(repo, config, capsys, fashion_mnist_test_images):
    serve_and_send(config, fashion_mnist_test_images[0][:1000])
    code, lines = monitor(repo, capsys)
    assert code == 0 and lines[-1].startswith("no breach: 1000 captured images")
    assert lines[0].startswith("v1: 20 requests, 1000 images, 0 labelled, no labels; latest window: no drift")
    report = json.loads((repo / "monitor-report.json").read_text())
    assert [len(version["windows"]) for version in report["versions"]] == [2]
    assert "<img alt='charts of v1'" in (repo / "monitor-report.html").read_text()


def test_darkened_traffic_is_a_breach_exit_3_naming_the_statistic(repo, config, capsys, fashion_mnist_test_images):
    serve_and_send(config, (fashion_mnist_test_images[0][:500] // 2).astype(np.uint8))
    code, lines = monitor(repo, capsys)
    assert code == 3
    assert lines[-1].startswith("BREACH: v1: drift in brightness") and "threshold" in lines[-1]


def test_live_accuracy_below_the_test_accuracy_is_a_breach(repo, config, capsys, fashion_mnist_test_images):
    images, labels = fashion_mnist_test_images
    wrong = (labels[:300] + 1) % 10  # every label says the model was wrong
    serve_and_send(config, images[:300], wrong)
    code, lines = monitor(repo, capsys, "--set", "monitor.min_labelled=200")
    assert code == 3 and "live accuracy" in lines[-1] and "300 labelled images" in lines[-1]


def test_too_few_labels_cannot_breach_on_accuracy(repo, config, capsys, fashion_mnist_test_images):
    images, labels = fashion_mnist_test_images
    serve_and_send(config, images[:300], (labels[:300] + 1) % 10)
    code, lines = monitor(repo, capsys, "--set", "monitor.min_labelled=301")
    assert code == 0 and lines[-1].startswith("no breach")


def test_a_half_written_capture_file_is_skipped_and_counted(repo, config, capsys, fashion_mnist_test_images):
    serve_and_send(config, fashion_mnist_test_images[0][:200])
    store = open_capture_store(config, MODEL)
    whole = store.store.read(store.files(REQUESTS)[0].key)
    store.write(REQUESTS, "killed-replica", 1, whole[:len(whole) // 2])  # cut in the middle of a record
    code, lines = monitor(repo, capsys)
    assert code == 0
    assert "unreadable records" in lines[-1]
    report = json.loads((repo / "monitor-report.json").read_text())
    assert report["skipped_lines"] == 1


def test_labels_imported_in_bulk_join_the_captured_requests(repo, config, capsys, tmp_path, monitored_model_dir,
                                                            fashion_mnist_test_images):
    from aimass.serving import load_served_model

    images = fashion_mnist_test_images[0][:300]
    serve_and_send(config, images, batch=1)
    served = load_served_model(MODEL, "v1", None, monitored_model_dir)
    answered = served.predict(images).argmax(axis=1)
    disagreeing = [served.class_names[(k + 1) % 10] for k in answered]  # each label says the answer was wrong
    rows = "id,label\n" + "".join(f"req-{k},{label}\n" for k, label in enumerate(disagreeing))
    (tmp_path / "labels.csv").write_text(rows)
    assert main(["feedback", "import", str(tmp_path / "labels.csv"), "--profile", "tiny", "--repo", str(repo),
                 "--set", f"registry.model_name={MODEL}"]) == 0
    assert "imported 300 labels" in capsys.readouterr().out
    code, lines = monitor(repo, capsys, "--set", "monitor.min_labelled=200")
    assert code == 3 and "live accuracy 0.0000" in lines[-1] and "300 labelled images" in lines[-1]


def test_an_import_with_an_unknown_class_imports_nothing(repo, config, capsys, tmp_path):
    (tmp_path / "labels.jsonl").write_text('{"id": "a", "label": "Bag"}\n{"id": "b", "label": "Spaceship"}\n')
    code = main(["feedback", "import", str(tmp_path / "labels.jsonl"), "--profile", "tiny", "--repo", str(repo),
                 "--set", f"registry.model_name={MODEL}"])
    assert code == 1 and "'Spaceship'" in capsys.readouterr().err
    assert open_capture_store(config, MODEL).files("feedback") == []


def test_an_import_with_a_row_lacking_its_label_names_the_row(repo, capsys, tmp_path):
    (tmp_path / "labels.csv").write_text("id,label\na,Bag\nb,\n")
    code = main(["feedback", "import", str(tmp_path / "labels.csv"), "--profile", "tiny", "--repo", str(repo),
                 "--set", f"registry.model_name={MODEL}"])
    assert code == 1 and "row 3" in capsys.readouterr().err


def test_the_report_escapes_every_value_it_prints():
    from aimass.monitoring.report import MonitorReport, VersionReport, report_html

    hostile = "<img src=x onerror=alert(1)>"
    report = MonitorReport("m", hostile, None, 0.0, None, 1, [f"{hostile}: unreadable"], 0,
                           [VersionReport("v1", 1, 1, 0, None, None, {hostile: 1.0}, notes=[hostile])])
    page = report_html(report)
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


# ---- the response ----

@pytest.fixture
def retraining_repo(data_repo, tmp_path, monitored_model_dir, tiny_teacher):
    """A copy of the DVC repository holding Fashion-MNIST, whose production model is the tiny teacher."""
    repo = copy_tree(data_repo, tmp_path / "repo")
    config = load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}"])
    release(config, monitored_model_dir, tiny_teacher[1].history[-1].validation_accuracy)
    return repo


@pytest.mark.slow
def test_a_breach_retrains_on_the_labelled_captured_images_once_per_cooldown(retraining_repo, capsys,
                                                                            fashion_mnist_test_images):
    repo = retraining_repo
    config = load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}",
                                  "serving.capture.flush_seconds=0.2"])
    images, labels = fashion_mnist_test_images
    serve_and_send(config, (images[:500] // 2).astype(np.uint8), labels[:500], prefix="dark")
    pinned_before = (repo / "data.dvc").read_text()
    # The retrained model is judged on the gate's own terms (this test is about the loop, not about tiny models'
    # run-to-run noise against the production model).
    code = main(["monitor", "--retrain", "--profile", "tiny", "--repo", str(repo),
                 "--set", "gate.max_regression=1.0", "--set", "hpo.enabled=false"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out[-5:]
    assert out[-1].startswith("BREACH: v1: drift in brightness") and "retrained on data" in out[-1]
    assert (repo / "data.dvc").read_text() != pinned_before
    index = [json.loads(line) for line in (repo / "data" / "index.jsonl").read_text().splitlines()]
    captured = [row for row in index if row["file"].startswith("images/captured/")]
    assert len(captured) == 500 and {row["split"] for row in captured} == {"train", "test"}
    registry = open_registry(config)
    retrained = registry.get("v2")
    assert retrained.lineage["trigger"] == "monitor"
    assert "brightness" in retrained.lineage["trigger_reason"] and "threshold" in retrained.lineage["trigger_reason"]
    assert retrained.lineage["data_md5"] in (repo / "data.dvc").read_text()
    assert main(["lineage", "v2", "--profile", "tiny", "--repo", str(repo)]) == 0
    assert "trigger                monitor: v1: drift in brightness" in capsys.readouterr().out

    assert main(["monitor", "--profile", "tiny", "--repo", str(repo)]) == 0  # v1's traffic: not production's now
    serve_and_send(config, (images[500:1000] // 2).astype(np.uint8), labels[500:1000], prefix="dark-again")
    capsys.readouterr()
    code = main(["monitor", "--retrain", "--profile", "tiny", "--repo", str(repo)])  # v2 breaches too
    again = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and "cooldown" in again[-1] and "nothing started" in again[-1]
    assert [record.version for record in registry.versions()] == ["v1", "v2"]


def test_a_breach_without_any_label_starts_nothing_and_says_what_to_send(retraining_repo, capsys,
                                                                         fashion_mnist_test_images):
    config = load_config("tiny", [f"data.repo_dir={retraining_repo}", f"registry.model_name={MODEL}",
                                  "serving.capture.flush_seconds=0.2"])
    serve_and_send(config, (fashion_mnist_test_images[0][:500] // 2).astype(np.uint8))
    pinned_before = (retraining_repo / "data.dvc").read_text()
    code = main(["monitor", "--retrain", "--profile", "tiny", "--repo", str(retraining_repo)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 3 and "nothing started" in out[-1] and "feedback" in out[-1]
    assert (retraining_repo / "data.dvc").read_text() == pinned_before


def test_a_run_in_flight_is_not_started_twice(tmp_path):
    from aimass.capture.store import CaptureStore
    from aimass.monitoring.retrain import (RetrainingRefused, check_may_start, local_run_is_alive, record_end,
                                           record_start)
    from aimass.object_store import LocalStore

    store = CaptureStore(LocalStore(tmp_path), "", MODEL)
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", "monitor.cooldown=0s"])
    check_may_start(store, config, local_run_is_alive)  # nothing recorded yet
    record_start(store, "local", "drift", "0" * 32 + ".dir")  # this very process is the run in flight
    with pytest.raises(RetrainingRefused, match="in flight"):
        check_may_start(store, config, local_run_is_alive)
    record_end(store, "succeeded")
    check_may_start(store, config, local_run_is_alive)  # ended, and no cooldown configured
