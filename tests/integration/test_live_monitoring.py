"""The server's drift window, measured on the demo data with a real trained model: what must not raise drift,
and what must, within one window."""
import numpy as np
import pytest

from aimass.data.preprocess import tensor_sources
from aimass.monitoring.live import LiveMonitor
from aimass.serving import ServerMetrics, load_served_model

WINDOW = 500


@pytest.fixture(scope="module")
def served(monitored_model_dir):
    return load_served_model("fashion-mnist", "v1", 1, monitored_model_dir)


def windows_of(images, served, config):
    """The monitor's report after each consecutive window of WINDOW images."""
    monitor = LiveMonitor("fashion-mnist", config, ServerMetrics(), lambda: served)
    for start in range(0, len(images), WINDOW):
        chunk = np.ascontiguousarray(images[start:start + WINDOW])
        monitor.observe(f"request-{start}", served, chunk, tensor_sources(chunk), served.predict(chunk))
        yield monitor.report()


def drifted_statistics(report) -> set[str]:
    return {check["statistic"] for check in report["drift"]["checks"] if check["drifted"]}


def test_held_out_test_images_raise_no_drift_over_twenty_consecutive_windows(served, tiny_config,
                                                                             fashion_mnist_test_images):
    images, _ = fashion_mnist_test_images
    reports = list(windows_of(images, served, tiny_config))
    assert len(reports) == 20
    assert all(report["window"]["images"] == WINDOW for report in reports)
    assert [drifted_statistics(report) for report in reports] == [set()] * 20


def test_images_of_half_the_brightness_are_detected_within_one_window(served, tiny_config,
                                                                      fashion_mnist_test_images):
    darker = (fashion_mnist_test_images[0][:WINDOW] // 2).astype(np.uint8)
    first = next(windows_of(darker, served, tiny_config))
    assert first["drift"]["detected"]
    assert {"brightness", "model outputs"} <= drifted_statistics(first)


def test_upside_down_images_of_equal_brightness_are_caught_by_the_model_outputs_test_alone(
        served, tiny_config, fashion_mnist_test_images):
    flipped = fashion_mnist_test_images[0][:WINDOW, :, ::-1, :]
    first = next(windows_of(flipped, served, tiny_config))
    assert drifted_statistics(first) == {"model outputs"}  # brightness, contrast and size are exactly as before


def test_no_drift_verdict_is_given_before_the_window_holds_min_images(served, tiny_config,
                                                                      fashion_mnist_test_images):
    few = (fashion_mnist_test_images[0][:tiny_config.serving.monitor.min_images - 1] // 2).astype(np.uint8)
    report = next(windows_of(few, served, tiny_config))
    assert not report["drift"]["detected"] and report["drift"]["checks"] == []
    assert "serving.monitor.min_images" in report["drift"]["notes"][0]


def test_a_model_registered_without_reference_outputs_is_still_checked_on_image_statistics(
        tiny_teacher, tiny_config, fashion_mnist_test_images):
    plain = load_served_model("fashion-mnist", "v1", 1, tiny_teacher[0])
    darker = (fashion_mnist_test_images[0][:WINDOW] // 2).astype(np.uint8)
    report = next(windows_of(darker, plain, tiny_config))
    assert "brightness" in drifted_statistics(report)
    assert "model outputs" not in {check["statistic"] for check in report["drift"]["checks"]}
    assert any("reference outputs" in note for note in report["drift"]["notes"])
