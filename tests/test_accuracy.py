"""Accuracy metrics and output comparison, on hand-made arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_mlscope.accuracy import assess, postprocess, top1_match, topk_accuracy
from pytest_mlscope.manifest import AccuracySpec

SCORES = np.array(
    [
        [0.1, 0.7, 0.2],  # top-1 is 1, label 1: hit
        [0.5, 0.3, 0.2],  # top-1 is 0, label 1: miss; in the top 2
        [0.2, 0.3, 0.5],  # top-1 is 2, label 2: hit
        [0.6, 0.3, 0.1],  # top-1 is 0, label 2: miss; last, so not in the top 2
    ]
)
LABELS = np.array([1, 1, 2, 2])


def spec(**fields: Any) -> AccuracySpec:
    """An accuracy section as a manifest would write it."""
    return AccuracySpec.model_validate(fields)


def check(report: Any, name: str) -> Any:
    (found,) = [c for c in report.checks if c.name == name]
    return found


# -- metrics -------------------------------------------------------------------------------------


def test_top1_accuracy_counts_rows_whose_best_score_is_the_label() -> None:
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(0.5)


def test_top2_accuracy_counts_labels_among_the_two_best_scores() -> None:
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(0.75)


def test_topk_with_k_beyond_the_class_count_is_every_row() -> None:
    assert topk_accuracy(SCORES, LABELS, 5) == pytest.approx(1.0)


def test_top1_match_compares_argmax_row_by_row() -> None:
    other = SCORES.copy()
    other[0] = [0.9, 0.05, 0.05]  # row 0 now picks class 0 instead of 1

    assert top1_match(SCORES, SCORES) == 1.0
    assert top1_match(SCORES, other) == pytest.approx(0.75)


def test_softmax_postprocess_rows_sum_to_one_and_keep_the_argmax() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0], [-5.0, -5.0, -5.0]])

    probabilities = postprocess(logits, ["softmax"])

    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(probabilities >= 0)
    assert list(probabilities.argmax(axis=1)) == list(logits.argmax(axis=1))
    np.testing.assert_allclose(probabilities[2], [1 / 3, 1 / 3, 1 / 3])


def test_sigmoid_postprocess_maps_zero_to_one_half() -> None:
    np.testing.assert_allclose(postprocess(np.array([[0.0, 100.0]]), ["sigmoid"]), [[0.5, 1.0]])


def test_no_postprocess_steps_leaves_the_outputs_unchanged() -> None:
    np.testing.assert_array_equal(postprocess(SCORES, []), SCORES)


# -- assess: top-k -------------------------------------------------------------------------------


def test_top1_target_met_is_a_passed_check_with_its_value() -> None:
    report = assess(spec(top1={"min": 0.5}), SCORES, LABELS)

    top1 = check(report, "top1")
    assert top1.passed
    assert top1.value == pytest.approx(0.5)
    assert "top-1 0.5000 (min 0.5) on 4 samples" in top1.detail
    assert report.passed
    assert report.top1 == pytest.approx(0.5)
    assert report.samples == 4


def test_top1_target_missed_is_a_failed_check() -> None:
    report = assess(spec(top1={"min": 0.9}), SCORES, LABELS)

    top1 = check(report, "top1")
    assert not top1.passed
    assert "min 0.9" in top1.detail
    assert not report.passed


def test_top1_target_without_labels_is_a_failed_check_not_an_exception() -> None:
    report = assess(spec(top1={"min": 0.5}), SCORES, None)

    top1 = check(report, "top1")
    assert not top1.passed
    assert top1.detail == "the dataset has no labels"
    assert report.top1 is None
    assert not report.passed


def test_no_targets_means_no_checks_and_a_passing_report() -> None:
    report = assess(spec(), SCORES, LABELS)

    assert report.checks == []
    assert report.passed


# -- assess: golden outputs ----------------------------------------------------------------------


def test_outputs_within_tolerance_of_the_golden_pass() -> None:
    golden = SCORES + 5e-5

    report = assess(
        spec(golden={"path": "g.npz", "atol": 1e-4, "rtol": 0}), SCORES, None, golden=golden
    )

    found = check(report, "golden")
    assert found.passed
    assert found.value == pytest.approx(5e-5)
    assert "worst at" not in found.detail


def test_outputs_off_the_golden_fail_naming_the_worst_element() -> None:
    golden = SCORES.copy()
    golden[0, 1] += 0.01
    golden[2, 0] -= 0.25  # the worst element

    report = assess(
        spec(golden={"path": "g.npz", "atol": 1e-4, "rtol": 0}), SCORES, None, golden=golden
    )

    found = check(report, "golden")
    assert not found.passed
    assert found.value == pytest.approx(0.25)
    assert "worst at (2, 0): got 0.2, expected -0.05" in found.detail
    assert "atol 0.0001, rtol 0" in found.detail


def test_golden_of_another_shape_is_a_failed_check_not_an_exception() -> None:
    golden = np.zeros((4, 5))

    report = assess(spec(golden="g.npz"), SCORES, None, golden=golden)

    found = check(report, "golden")
    assert not found.passed
    assert "shape (4, 3) != expected (4, 5)" in found.detail


# -- assess: cross-framework agreement -----------------------------------------------------------


def test_outputs_agreeing_with_the_reference_pass() -> None:
    reference = SCORES + 1e-6

    report = assess(spec(agreement={"reference": "torch"}), SCORES, None, reference=reference)

    found = check(report, "agreement")
    assert found.passed
    assert "vs torch: top-1 match 1.000 (min 1)" in found.detail


def test_agreement_fails_when_top1_differs_even_within_tolerance() -> None:
    outputs = np.array([[0.5, 0.5 + 1e-6], [0.9, 0.1]])
    reference = np.array([[0.5 + 1e-6, 0.5], [0.9, 0.1]])

    report = assess(
        spec(agreement={"reference": "torch", "atol": 1e-4, "rtol": 0, "top1_match": 1.0}),
        outputs,
        None,
        reference=reference,
        reference_name="torch-cpu-bs1",
    )

    found = check(report, "agreement")
    assert not found.passed
    assert found.value == pytest.approx(1e-6)
    assert "vs torch-cpu-bs1: top-1 match 0.500 (min 1)" in found.detail


def test_agreement_with_a_reference_of_another_shape_is_a_failed_check() -> None:
    reference = np.zeros((4, 5))

    report = assess(spec(agreement={"reference": "torch"}), SCORES, None, reference=reference)

    found = check(report, "agreement")
    assert not found.passed
    assert "top-1 match 0.000" in found.detail
    assert "shape (4, 3) != expected (4, 5)" in found.detail
