"""Metrics on small hand-computed examples."""

import itertools
import json
import math

import numpy as np
import pytest

from herbscan import metrics

# 4 classes, class 3 never occurs. Confusion matrix:
#   true 0: [3, 1, 0, 0]   true 1: [0, 2, 1, 0]   true 2: [1, 0, 2, 0]   true 3: [0, 0, 0, 0]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])


def test_confusion_matrix_rows_true_columns_predicted():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]


def test_accuracy_and_per_class_accuracy_with_an_absent_class():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == 0.7
    assert metrics.per_class_accuracy(Y_TRUE, Y_PRED, 4) == [0.75, 2 / 3, 2 / 3, None]


def test_macro_f1_ignores_classes_absent_from_truth_and_predictions():
    # F1: class 0 = 6/8, class 1 = 4/6, class 2 = 4/6; class 3 left out.
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 4) == pytest.approx(25 / 36, abs=1e-15)


def test_macro_f1_counts_a_class_only_predicted_as_zero():
    # class 0: F1 2/3, class 1: 1, class 2 (never true, once predicted): 0
    assert metrics.macro_f1([0, 0, 1, 1], [0, 2, 1, 1], 3) == pytest.approx(5 / 9, abs=1e-15)


def test_perfect_predictions():
    y = np.array([0, 1, 2, 1])
    probs = np.eye(3)[y]
    m = metrics.compute_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == 1.0
    assert m["balanced_accuracy"] == 1.0
    assert m["macro_f1"] == 1.0
    assert m["calibration"]["ece"] == 0.0
    assert m["log_loss"] == 0.0
    assert all(row["accuracy"] == 1.0 for row in m["coverage"])


def test_top_k_accuracy():
    probs = np.array(
        [
            [0.1, 0.5, 0.3, 0.1],  # true 0: two classes above it
            [0.2, 0.4, 0.3, 0.1],  # true 1: top
            [0.4, 0.3, 0.2, 0.1],  # true 2: two above
            [0.4, 0.3, 0.2, 0.1],  # true 3: three above
        ]
    )
    y = [0, 1, 2, 3]
    assert [metrics.top_k_accuracy(y, probs, k) for k in (1, 2, 3, 4)] == [0.25, 0.25, 0.75, 1.0]
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k_accuracy(y, probs, 5)


def test_top_k_counts_ties_in_the_sheets_favour():
    assert metrics.top_k_accuracy([1], [[0.5, 0.5]], 1) == 1.0


def _graded_sheets():
    """20 two-class sheets with confidence 0.99, 0.97, …, 0.61; the 3 least confident wrong."""
    conf = 0.99 - 0.02 * np.arange(20)
    y = np.zeros(20, dtype=np.int64)
    y[[15, 18, 19]] = 1
    probs = np.stack([conf, 1 - conf], axis=1)
    return y, probs


def test_coverage_curve_exact_values():
    y, probs = _graded_sheets()
    curve = metrics.coverage_curve(y, probs)
    assert [row["discarded"] for row in curve] == [
        0.0,
        0.05,
        0.1,
        0.15,
        0.2,
        0.25,
        0.3,
        0.35,
        0.4,
        0.45,
        0.5,
    ]
    assert [row["n"] for row in curve] == [20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10]
    assert [row["accuracy"] for row in curve[:6]] == [
        17 / 20,
        17 / 19,
        17 / 18,
        16 / 17,
        15 / 16,
        1.0,
    ]
    assert curve[0]["coverage"] == 1.0 and curve[-1]["coverage"] == 0.5
    assert curve[0]["threshold"] == pytest.approx(0.61)


def test_coverage_curve_rises_when_errors_are_the_least_confident():
    conf = 0.995 - 0.004 * np.arange(100)
    y = np.zeros(100, dtype=np.int64)
    y[[99, 98, 97, 96, 95, 93, 91, 88, 84, 79, 72, 66]] = 1
    curve = metrics.coverage_curve(y, np.stack([conf, 1 - conf], axis=1))
    accs = [row["accuracy"] for row in curve]
    assert accs[:8] == [0.88, 88 / 95, 85 / 90, 81 / 85, 77 / 80, 73 / 75, 69 / 70, 1.0]
    assert all(a <= b for a, b in itertools.pairwise(accs))


def test_coverage_curve_rejects_discarding_everything():
    y, probs = _graded_sheets()
    with pytest.raises(ValueError, match="discard"):
        metrics.coverage_curve(y, probs, discard=[1.0])


def test_calibration_ece_on_a_constructed_case():
    # 4 sheets at confidence 0.95, 3 right (gap 0.2); 6 at 0.65, 3 right (gap 0.15).
    # ECE = 0.4 * 0.2 + 0.6 * 0.15 = 0.17
    conf = np.array([0.95] * 4 + [0.65] * 6)
    probs = np.stack([conf, 1 - conf], axis=1)
    y = np.array([0, 0, 0, 1] + [0, 0, 0, 1, 1, 1])
    cal = metrics.calibration(y, probs, n_bins=10)
    assert cal["ece"] == pytest.approx(0.17, abs=1e-12)
    assert len(cal["bins"]) == 10
    b6, b9 = cal["bins"][6], cal["bins"][9]
    assert (b6["low"], b6["high"], b6["count"], b6["accuracy"]) == (0.6, 0.7, 6, 0.5)
    assert b6["confidence"] == pytest.approx(0.65)
    assert (b9["count"], b9["accuracy"]) == (4, 0.75)
    assert cal["bins"][0] == {
        "low": 0.0,
        "high": 0.1,
        "count": 0,
        "confidence": None,
        "accuracy": None,
    }


def test_log_loss():
    value = metrics.log_loss([0, 0], [[0.8, 0.2], [0.4, 0.6]])
    assert value == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2, abs=1e-15)


def _plain(value):
    """True when value holds only JSON's own Python types (no numpy scalars)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (int, float, str, bool)


def test_compute_metrics_keys_values_and_plain_types():
    classes = ["a", "b", "c", "d"]
    probs = np.full((10, 4), 0.1)
    probs[np.arange(10), Y_PRED] = 0.7
    m = metrics.compute_metrics(Y_TRUE, probs, classes)
    assert _plain(m)
    json.dumps(m)
    assert m["n"] == 10 and m["classes"] == classes
    assert m["accuracy"] == 0.7
    assert m["per_class_accuracy"] == {"a": 0.75, "b": 2 / 3, "c": 2 / 3, "d": None}
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3, abs=1e-15)
    assert m["confusion_matrix"][0] == [3, 1, 0, 0]
    assert m["macro_f1"] == pytest.approx(25 / 36, abs=1e-15)
    assert set(m["top_k_accuracy"]) == {"2", "3"}
    assert m["log_loss"] == pytest.approx(-math.log(0.7) * 0.7 - math.log(0.1) * 0.3)
    assert len(m["coverage"]) == 11
    # every sheet has confidence 0.7 and 70% are right
    assert m["calibration"]["ece"] == pytest.approx(0.0, abs=1e-12)


def test_top_k_is_empty_for_two_classes():
    m = metrics.compute_metrics([0, 1], [[0.9, 0.1], [0.3, 0.7]], ["clean", "stained"])
    assert m["top_k_accuracy"] == {}


@pytest.mark.parametrize(
    "y, probs, classes, message",
    [
        (np.array([], dtype=int), np.zeros((0, 2)), ["a", "b"], "empty"),
        ([0, 1], [[2.0, -1.0], [0.0, 1.0]], ["a", "b"], "non-negative"),
        ([0, 1], [[0.5, 0.6], [0.0, 1.0]], ["a", "b"], "sum to 1"),
        ([0, 2], [[0.5, 0.5], [0.0, 1.0]], ["a", "b"], r"\[0, 1\]"),
        ([0, 1], [[0.5, 0.5], [0.0, 1.0]], ["a"], "names"),
        ([0.0, 1.0], [[0.5, 0.5], [0.0, 1.0]], ["a", "b"], "integer"),
    ],
)
def test_bad_input_raises_clear_value_error(y, probs, classes, message):
    with pytest.raises(ValueError, match=message):
        metrics.compute_metrics(y, probs, classes)


def test_every_number_has_a_95_interval_around_it():
    from herbscan.metrics import _ece, calibration, compute_metrics, wilson_interval

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    logits = rng.normal(0, 1, (120, 3))
    logits[np.arange(120), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = compute_metrics(y, p, ["a", "b", "c"])
    iv = m["intervals"]
    assert iv["accuracy"] == list(wilson_interval(round(m["accuracy"] * 120), 120))
    for name in ("balanced_accuracy", "macro_f1"):
        assert iv[name][0] <= m[name] <= iv[name][1]
    assert iv["ece"][0] < iv["ece"][1]
    assert _ece(y, p) == pytest.approx(calibration(y, p)["ece"])
    for c, (lo, hi) in iv["per_class_accuracy"].items():
        assert lo <= m["per_class_accuracy"][c] <= hi
    # four images per specimen: resampling specimens, not images, widens the interval
    g = np.repeat(np.arange(30), 4)
    y4, p4 = y[g], p[g]
    by_sheet = compute_metrics(y4, p4, ["a", "b", "c"])["intervals"]["macro_f1"]
    by_specimen = compute_metrics(y4, p4, ["a", "b", "c"], groups=g)["intervals"]["macro_f1"]
    assert by_specimen[1] - by_specimen[0] > 1.5 * (by_sheet[1] - by_sheet[0])


def test_compare_runs_tells_a_real_difference_from_noise(tmp_path):
    import csv

    from herbscan.evaluate import compare_runs

    def write(folder, correct):
        folder.mkdir()
        with open(folder / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "specimen_id", "correct"])
            for i, c in enumerate(correct):
                w.writerow([f"s{i}.jpg", f"S{i}", int(c)])

    rng = np.random.default_rng(0)
    base = rng.random(200) < 0.7
    write(tmp_path / "a", base)
    better = base.copy()
    better[np.flatnonzero(~base)[:40]] = True  # b also gets 40 of a's errors right
    write(tmp_path / "b", better)
    same = base.copy()
    flip = rng.choice(200, 6, replace=False)
    same[flip] = ~same[flip]  # a few sheets either way
    write(tmp_path / "c", same)
    real = compare_runs(tmp_path / "a", tmp_path / "b")
    assert real["real"] and real["only_b_right"] == 40 and real["only_a_right"] == 0
    assert real["verdict"].startswith("b is better")
    noise = compare_runs(tmp_path / "a", tmp_path / "c")
    assert not noise["real"] and noise["verdict"].startswith("no real difference")


def test_per_class_precision_with_wilson_intervals():
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0, 0])  # class 2 never predicted
    probs = np.eye(3)[pred]
    m = metrics.compute_metrics(y, probs, ["a", "b", "c"])
    assert m["per_class_precision"] == {"a": 2 / 4, "b": 1 / 3, "c": None}
    iv = m["intervals"]["per_class_precision"]
    assert iv["a"] == pytest.approx(list(metrics.wilson_interval(2, 4)))
    assert iv["b"][0] < 1 / 3 < iv["b"][1] and iv["c"] is None
    json.dumps(m)  # serialisable
