"""Compare an artifact's outputs with the onnxruntime reference.

Pass/fail never rests on cosine alone: a 2x-scaled output has cosine 1 but SQNR 0 dB.
Non-finite values on either side fail (NaN compares false, so they are checked explicitly).
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.profiles import Tolerance
from edgekit.types import OutputMetrics

_TINY = 1e-30
# Half-decade bins of |error| from 1e-9 to 1e2; counts add an underflow and an overflow bin.
HISTOGRAM_EDGES: list[float] = [float(10.0**e) for e in np.arange(-9.0, 2.01, 0.5)]


def error_histogram(abs_errors: np.ndarray) -> list[int]:
    edges = np.asarray(HISTOGRAM_EDGES)
    counts = np.histogram(np.clip(abs_errors, edges[0] / 10, edges[-1] * 10), bins=[0.0, *edges, np.inf])[0]
    return [int(c) for c in counts]


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance) -> OutputMetrics:
    failures: list[str] = []
    if np.shape(reference) != np.shape(candidate):
        return OutputMetrics(name, math.inf, math.inf, math.inf, 0.0, -math.inf, False, False,
                             [f"shape mismatch: reference {np.shape(reference)} vs artifact {np.shape(candidate)}"])
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(candidate, dtype=np.float64).ravel()
    ref_finite, out_finite = bool(np.isfinite(ref).all()), bool(np.isfinite(out).all())
    if not ref_finite:
        failures.append("the reference (onnxruntime) output has NaN/Inf values; the model itself produces them on these inputs")
    if not out_finite:
        failures.append("the artifact's output has NaN/Inf values")
    finite = ref_finite and out_finite
    if not finite:
        return OutputMetrics(name, math.nan, math.nan, math.nan, math.nan, math.nan, False, False, failures)

    diff = out - ref
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    mean_abs = float(np.mean(np.abs(diff))) if diff.size else 0.0
    ref_scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_rel = max_abs / ref_scale if ref_scale > _TINY else (0.0 if max_abs == 0 else math.inf)
    # SQNR and cosine do not depend on scale: normalized, squares neither underflow (a 1e-200 reference against
    # zeros would otherwise look noise-free) nor overflow
    scale = max(ref_scale, float(np.max(np.abs(out))) if out.size else 0.0) or 1.0
    ref_n, out_n, diff_n = ref / scale, out / scale, diff / scale
    signal, noise = float(np.sum(ref_n * ref_n)), float(np.sum(diff_n * diff_n))
    norm_product = math.sqrt(signal) * math.sqrt(float(np.sum(out_n * out_n)))
    if noise == 0.0:
        sqnr, cosine = math.inf, 1.0
    elif signal == 0.0:
        # An all-zero reference: any non-zero output is pure noise.
        sqnr, cosine = -math.inf, 0.0
    else:
        sqnr = 10.0 * math.log10(signal / noise)
        cosine = float(np.dot(ref_n, out_n) / norm_product) if norm_product > 0 else 0.0

    if cosine < tolerance.min_cosine:
        failures.append(f"cosine {cosine:.6f} < {tolerance.min_cosine}")
    if sqnr < tolerance.min_sqnr_db:
        failures.append(f"SQNR {sqnr:.2f} dB < {tolerance.min_sqnr_db} dB")
    if tolerance.max_abs_error is not None and max_abs > tolerance.max_abs_error:
        failures.append(f"max abs error {max_abs:.3g} > {tolerance.max_abs_error}")
    return OutputMetrics(name, max_abs, mean_abs, max_rel, cosine, sqnr, True, not failures, failures, error_histogram(np.abs(diff)))


def merge(per_sample: list[OutputMetrics], tolerance: Tolerance) -> OutputMetrics:
    """Worst case over samples for each metric; fails if any sample failed."""
    first = per_sample[0]
    failures: list[str] = []
    for metrics in per_sample:
        failures.extend(f for f in metrics.failures if f not in failures)
    return OutputMetrics(
        name=first.name,
        max_abs_error=max(m.max_abs_error for m in per_sample),
        mean_abs_error=float(np.mean([m.mean_abs_error for m in per_sample])),
        max_rel_error=max(m.max_rel_error for m in per_sample),
        cosine=min(m.cosine for m in per_sample),
        sqnr_db=min(m.sqnr_db for m in per_sample),
        finite=all(m.finite for m in per_sample),
        passed=all(m.passed for m in per_sample),
        failures=failures,
        error_histogram=[int(c) for c in np.sum([m.error_histogram for m in per_sample if m.error_histogram], axis=0)]
        if any(m.error_histogram for m in per_sample) else [],
    )
