import math

import numpy as np

from edgekit.metrics import compare, merge
from edgekit.profiles import Tolerance

STRICT = Tolerance(min_cosine=0.9999, min_sqnr_db=40.0)


def reference() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_identical_outputs_pass():
    ref = reference()
    metrics = compare("y", ref, ref.copy(), STRICT)
    assert metrics.passed and metrics.max_abs_error == 0 and metrics.sqnr_db == math.inf


def test_scaled_output_fails_despite_perfect_cosine():
    ref = reference()
    metrics = compare("y", ref, 2 * ref, STRICT)
    assert metrics.cosine > 0.999999
    assert not metrics.passed
    assert any("SQNR" in f for f in metrics.failures)


def test_small_noise_passes_and_large_noise_fails():
    ref = reference()
    rng = np.random.default_rng(1)
    assert compare("y", ref, ref + 1e-4 * rng.standard_normal(ref.shape), STRICT).passed
    assert not compare("y", ref, ref + 0.3 * rng.standard_normal(ref.shape), STRICT).passed


def test_nan_never_passes():
    ref = reference()
    bad = ref.copy()
    bad[0, 0, 0, 0] = np.nan
    metrics = compare("y", ref, bad, Tolerance(min_cosine=-1, min_sqnr_db=-1000))
    assert not metrics.passed and not metrics.finite
    assert "NaN/Inf" in metrics.failures[0]
    metrics = compare("y", bad, ref, Tolerance(min_cosine=-1, min_sqnr_db=-1000))
    assert not metrics.passed and "reference" in metrics.failures[0]


def test_all_zero_outputs_are_defined():
    zeros = np.zeros((4, 4), np.float32)
    same = compare("y", zeros, zeros, STRICT)
    assert same.passed and same.max_rel_error == 0.0
    different = compare("y", zeros, zeros + 0.5, STRICT)
    assert not different.passed and different.sqnr_db == -math.inf


def test_shape_mismatch_fails():
    assert not compare("y", np.zeros((2, 3)), np.zeros((3, 2)), STRICT).passed


def test_merge_takes_worst_case():
    ref = reference()
    good = compare("y", ref, ref, STRICT)
    bad = compare("y", ref, ref * 1.5, STRICT)
    merged = merge([good, bad], STRICT)
    assert not merged.passed and merged.sqnr_db == bad.sqnr_db and merged.max_abs_error == bad.max_abs_error
