"""The gain band and top-k agreement: what cosine and SQNR let through."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.errors import OptionsError, ProfileError
from edgekit.metrics import apply_checks, compare, merge, parse_check, topk_agreement
from edgekit.profiles import DEFAULT_TOLERANCES, Tolerance, parse_profile

INT8 = DEFAULT_TOLERANCES["int8"]


def test_a_1_25x_scaled_int8_output_fails_on_gain_alone():
    reference = np.random.default_rng(0).standard_normal((1, 1000))
    scaled = compare("logits", reference, 1.25 * reference, INT8)
    assert scaled.cosine == pytest.approx(1.0) and scaled.sqnr_db > INT8.min_sqnr_db  # 12.04 dB: cosine and SQNR pass it
    assert not scaled.passed and scaled.gain == pytest.approx(1.25)
    assert scaled.failures == [f"gain 1.2500 outside 1 ± {INT8.max_gain_error}"]
    without_band = compare("logits", reference, 1.25 * reference, Tolerance(INT8.min_cosine, INT8.min_sqnr_db))
    assert without_band.passed  # what edgekit did before the gain check


def test_gain_over_samples_is_the_one_farthest_from_one_and_nan_never_passes():
    reference = np.linspace(-1, 1, 64)
    per_sample = [compare("y", reference, g * reference, INT8) for g in (1.0, 0.93, 1.02)]
    assert merge(per_sample, INT8).gain == pytest.approx(0.93)
    bad = compare("y", reference, np.full(64, np.nan), INT8)
    assert not bad.passed and math.isnan(bad.gain)
    assert math.isnan(merge([per_sample[0], bad], INT8).gain)


def test_all_zero_reference_has_a_defined_gain():
    zeros = np.zeros((1, 8))
    same = compare("y", zeros, zeros, INT8)
    assert same.passed and same.gain == 1.0
    noise = compare("y", zeros, np.full((1, 8), 1e-3), INT8)
    assert not noise.passed and noise.gain == math.inf


def test_topk_agreement_counts_rows_and_forgives_ties():
    reference = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4]])
    candidate = np.array([[0.1, 0.6, 0.3], [0.6, 0.4, 0.0], [0.5, 0.2, 0.3]])
    assert topk_agreement(reference, candidate, 1) == pytest.approx(2 / 3)  # row 2 flipped; row 1 is a tie in the reference
    logits = np.random.default_rng(1).standard_normal((4, 1, 20))  # CTC-like [T, 1, classes]: every position is a row
    assert topk_agreement(logits, logits + 1e-6, 5) == 1.0
    shuffled = logits[..., ::-1]
    assert topk_agreement(logits, shuffled, 1) < 0.5


def test_class_score_outputs_get_topk_and_others_do_not():
    scores = compare("prob", np.array([[0.1, 0.9]]), np.array([[0.2, 0.8]]), INT8)
    assert scores.top1_agreement == 1.0 and scores.top5_agreement is None  # 2 classes: no top-5
    image = compare("features", np.ones((1, 4, 8, 8)), np.ones((1, 4, 8, 8)), INT8)
    assert image.top1_agreement is None
    declared = compare("features", np.ones((1, 4, 8, 8)), np.ones((1, 4, 8, 8)), INT8, class_scores=True)
    assert declared.top1_agreement == 1.0


def test_declared_checks_gate_verification():
    reference = np.random.default_rng(2).standard_normal((1, 10))
    flipped = reference.copy()
    flipped[0, [np.argmax(reference), np.argmin(reference)]] = flipped[0, [np.argmin(reference), np.argmax(reference)]]
    output = merge([compare("logits", reference, reference, INT8), compare("logits", reference, flipped, INT8, class_scores=True)], INT8)
    ran = apply_checks(output, {"top1": 0.99})
    assert ran == [{"output": "logits", "metric": "top1", "min": 0.99, "value": 0.5, "passed": False}]
    assert not output.passed and "top1 agreement 0.5000 < 0.99" in output.failures


def test_check_option_and_profile_table():
    assert parse_check("logits=top1:0.99") == ("logits", "top1", 0.99)
    assert parse_check("out/prob:0=top5:1") == ("out/prob:0", "top5", 1.0)
    for bad in ("logits=top2:0.9", "logits=top1:1.5", "logits", "logits=top1:x"):
        with pytest.raises(OptionsError, match="expected OUTPUT=top1:MIN"):
            parse_check(bad)
    base = {"name": "t", "backend": "tflite", "precisions": ["fp32", "int8"]}
    profile = parse_profile({**base, "checks": {"logits": {"top1": 0.99, "top5": 1.0}}, "fix_inputs": {"sr": 16000, "mask": [1, 0]},
                             "tolerances": {"int8": {"max_gain_error": 0.05}}}, source=None)
    assert profile.checks == {"logits": {"top1": 0.99, "top5": 1.0}} and profile.fix_inputs == {"sr": 16000, "mask": [1, 0]}
    assert profile.tolerance_for("int8").max_gain_error == 0.05
    with pytest.raises(ProfileError, match="checks.logits.top3"):
        parse_profile({**base, "checks": {"logits": {"top3": 0.9}}}, source=None)
    with pytest.raises(ProfileError, match="fix_inputs.sr"):
        parse_profile({**base, "fix_inputs": {"sr": "16k"}}, source=None)
