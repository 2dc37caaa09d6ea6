"""A canary step's verdict from two snapshots of the servers' counters: windows, resets, quantiles, and how the checks
combine. The snapshots are parsed from Prometheus text as a server's /metrics serves it."""
import pytest

from aimass.canary.analysis import increase, judge, measure_window, parse_metrics_text
from aimass.canary.plan import CanaryError, CanaryState, check_steps, routes_to_candidate
from aimass.config import CanaryConfig

SETTINGS = CanaryConfig(min_requests=100, min_labelled=50)


def metrics(requests=None, buckets=None, judged=None, compared=(0, 0), drift=(0, 0)):
    """Prometheus text of the series the analysis reads. requests: {(version, code): n}; buckets: {version:
    {le: cumulative n}}; judged: {version: (images, correct)}; compared: (compared, agreed); drift: (candidate,
    production)."""
    lines = []
    for (version, code), value in (requests or {}).items():
        lines.append(f'aimass_model_requests_total{{version="{version}",code="{code}"}} {value}')
    for version, counts in (buckets or {}).items():
        for le, value in counts.items():
            lines.append(f'aimass_model_request_duration_seconds_bucket{{version="{version}",le="{le}"}} {value}')
    for version, (images, correct) in (judged or {}).items():
        lines.append(f'aimass_judged_images_total{{version="{version}"}} {images}')
        lines.append(f'aimass_judged_correct_images_total{{version="{version}"}} {correct}')
    lines.append(f"aimass_shadow_compared_images_total {compared[0]}")
    lines.append(f"aimass_shadow_agreed_images_total {compared[1]}")
    lines.append(f"aimass_canary_drift_detected {drift[0]}")
    lines.append(f"aimass_drift_detected {drift[1]}")
    return parse_metrics_text("\n".join(lines) + "\n")


EMPTY = metrics()


def checks_of(end, start=EMPTY, since=EMPTY):
    return {check.name: check for check in judge(measure_window(start, end, since, ("v2", "v1")), "v2", "v1",
                                                 SETTINGS)}


# ---- windows ----

def test_a_window_counts_what_happened_between_its_two_snapshots():
    start = metrics({("v2", "200"): 40})
    end = metrics({("v2", "200"): 140})
    assert increase(start, end, "aimass_model_requests_total", version="v2") == 100


def test_a_counter_that_went_down_was_reset_and_counts_from_zero():
    start = metrics({("v2", "200"): 500})
    end = metrics({("v2", "200"): 30})  # the server restarted during the window
    assert increase(start, end, "aimass_model_requests_total", version="v2") == 30


def test_p99_is_interpolated_within_its_bucket_as_histogram_quantile_does():
    # 100 requests: 90 under 10 ms, 10 between 10 and 20 ms: the 99th lies 9/10 into the second bucket.
    end = metrics({("v2", "200"): 100, ("v1", "200"): 100},
                  {"v2": {"0.01": 90, "0.02": 100, "+Inf": 100}, "v1": {"0.01": 100, "0.02": 100, "+Inf": 100}})
    window = measure_window(EMPTY, end, EMPTY, ("v2", "v1"))
    assert window.p99["v2"] == pytest.approx(0.019)
    assert window.p99["v1"] == pytest.approx(0.0099)


# ---- the checks ----

def test_a_candidate_failing_more_often_than_production_fails_the_error_check():
    end = metrics({("v2", "200"): 95, ("v2", "500"): 5, ("v1", "200"): 1000})
    errors = checks_of(end)["errors"]
    assert not errors.passed and errors.value == pytest.approx(0.05)
    assert "release.canary.max_error_rate_increase" in errors.summary


def test_latency_is_judged_only_when_both_versions_answered_min_requests():
    slow = {"0.01": 0, "0.1": 100, "+Inf": 100}
    fast = {"0.01": 100, "0.1": 100, "+Inf": 100}
    judged = checks_of(metrics({("v2", "200"): 100, ("v1", "200"): 100}, {"v2": slow, "v1": fast}))["latency"]
    too_few = checks_of(metrics({("v2", "200"): 99, ("v1", "200"): 100}, {"v2": slow, "v1": fast}))["latency"]
    assert judged.judged and not judged.passed and judged.value > SETTINGS.max_latency_ratio
    assert not too_few.judged and too_few.passed


def test_without_enough_labels_agreement_decides():
    checks = checks_of(metrics(compared=(400, 200), judged={"v2": (10, 9), "v1": (10, 5)}))
    assert not checks["accuracy"].judged
    assert checks["agreement"].judged and not checks["agreement"].passed and checks["agreement"].value == 0.5


def test_a_candidate_that_disagrees_because_it_is_right_more_often_passes():
    checks = checks_of(metrics(compared=(400, 200), judged={"v2": (100, 90), "v1": (100, 60)}))
    assert checks["accuracy"].judged and checks["accuracy"].passed
    assert not checks["agreement"].judged and checks["agreement"].passed
    assert "live accuracy decides" in checks["agreement"].summary


def test_a_candidate_less_accurate_than_production_by_more_than_the_allowance_fails():
    checks = checks_of(metrics(compared=(400, 396), judged={"v2": (100, 70), "v1": (100, 80)}))
    assert not checks["accuracy"].passed and checks["accuracy"].value == pytest.approx(-0.10)


def test_accuracy_counts_labels_since_the_canary_started_not_only_this_step():
    since = metrics(judged={"v2": (0, 0), "v1": (0, 0)})
    start = metrics(judged={"v2": (40, 36), "v1": (40, 20)})
    end = metrics(judged={"v2": (60, 54), "v1": (60, 30)})
    accuracy = checks_of(end, start, since)["accuracy"]
    assert accuracy.judged and accuracy.value == pytest.approx(0.9 - 0.5)


def test_a_candidate_whose_window_drifts_while_production_does_not_fails_the_drift_check():
    assert not checks_of(metrics(drift=(1, 0)))["drift"].passed
    assert checks_of(metrics(drift=(1, 1)))["drift"].passed  # the traffic moved away from both
    assert checks_of(metrics(drift=(0, 1)))["drift"].passed  # retrained on it: closer than production


# ---- the plan ----

@pytest.mark.parametrize("steps, message", [((), "no steps"), ((10, 10, 100), "not increasing"),
                                            ((0, 100), "outside 1..100"), ((50, 101), "outside 1..100"),
                                            ((10, 50), "not 100")])
def test_bad_steps_are_refused_with_what_to_give(steps, message):
    with pytest.raises(CanaryError, match=message):
        check_steps(steps)


def test_routing_is_decided_by_the_request_id_alone():
    assert all(routes_to_candidate(f"id-{n}", 100) for n in range(100))
    assert not any(routes_to_candidate(f"id-{n}", 0) for n in range(100))
    assert routes_to_candidate("retry-me", 30) == routes_to_candidate("retry-me", 30)
    assert abs(sum(routes_to_candidate(f"id-{n}", 30) for n in range(10_000)) - 3000) < 150


def test_a_canary_state_survives_the_round_trip_through_a_revision():
    state = CanaryState("v3", "file:///r/models/m/versions/v3", "a" * 64, (10, 100), True, 1, 4, "t", "alice")
    assert CanaryState.from_dict(state.to_dict()) == state
    assert (state.weight, state.step_label()) == (10, "step 2/3 (weight 10%)")
