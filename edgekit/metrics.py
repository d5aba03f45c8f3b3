"""Compare an artifact's outputs with the onnxruntime reference.

Pass/fail never rests on cosine alone: a 2x-scaled output has cosine 1 but SQNR 0 dB, and a 1.25x-scaled one
still has SQNR 12 dB, so the gain (least-squares scale of the artifact against the reference) has its own band.
Non-finite values on either side fail (NaN compares false, so they are checked explicitly). Class-score outputs
also get top-1/top-5 agreement (docs/verification.md says which outputs count as class scores).
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


def gain_of(ref: np.ndarray, out: np.ndarray) -> float:
    """<out, ref> / <ref, ref>: 1.0 for a perfect match; an all-zero reference gives 1.0 when the output is all zero
    too, else inf (any output is then pure noise)."""
    # normalized first, so that the squares of a tiny (1e-200) reference do not underflow to 0
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, float(np.max(np.abs(out))) if out.size else 0.0) or 1.0
    ref, out = ref / scale, out / scale
    signal = float(np.dot(ref, ref))
    if signal == 0.0:
        return 1.0 if not np.any(out) else math.inf
    return float(np.dot(out, ref)) / signal


def is_class_scores(reference: np.ndarray) -> bool:
    """A ``[batch, classes]`` output (classes >= 2), or one whose rows along the last axis are probability
    distributions (non-negative, summing to 1): what a classifier head emits."""
    if reference.ndim < 1 or reference.shape[-1] < 2 or reference.dtype.kind != "f":
        return False
    if reference.ndim == 2:
        return True
    return bool(np.all(reference >= 0) and np.allclose(reference.sum(axis=-1), 1.0, atol=1e-3))


def topk_agreement(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Fraction of rows (all positions but the last axis) whose artifact top-k classes are the reference's top-k.
    Ties in the reference count as agreement (a class scoring as high as the reference's k-th best is a top-k class)."""
    classes = reference.shape[-1]
    ref = np.asarray(reference, np.float64).reshape(-1, classes)
    out = np.asarray(candidate, np.float64).reshape(-1, classes)
    k = min(k, classes)
    kth_best = -np.sort(-ref, axis=1)[:, k - 1 : k]
    slack = 1e-6 * np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-30)
    chosen = np.argpartition(-out, k - 1, axis=1)[:, :k] if k < classes else np.tile(np.arange(classes), (len(out), 1))
    agree = np.all(np.take_along_axis(ref, chosen, axis=1) >= kth_best - slack, axis=1)
    return float(agree.mean()) if len(agree) else 1.0


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance, class_scores: bool | None = None) -> OutputMetrics:
    """Metrics of one output on one sample. ``class_scores``: None decides from the reference (is_class_scores)."""
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
        return OutputMetrics(name, math.nan, math.nan, math.nan, math.nan, math.nan, False, False, failures, gain=math.nan)

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
    gain = gain_of(ref, out)
    if tolerance.max_gain_error is not None and not abs(gain - 1.0) <= tolerance.max_gain_error:
        failures.append(f"gain {gain:.4f} outside 1 ± {tolerance.max_gain_error}")
    top1 = top5 = None
    reference = np.asarray(reference)
    if class_scores if class_scores is not None else is_class_scores(reference):
        top1 = topk_agreement(reference, np.asarray(candidate), 1)
        top5 = topk_agreement(reference, np.asarray(candidate), 5) if reference.shape[-1] > 5 else None
    return OutputMetrics(name, max_abs, mean_abs, max_rel, cosine, sqnr, True, not failures, failures, error_histogram(np.abs(diff)),
                         gain=gain, top1_agreement=top1, top5_agreement=top5)


def _farthest_from_one(gains: list[float | None]) -> float | None:
    known = [g for g in gains if g is not None]
    if not known:
        return None
    return max(known, key=lambda g: math.inf if math.isnan(g) else abs(g - 1.0))


def _mean(values: list[float | None]) -> float | None:
    return float(np.mean(values)) if values and all(v is not None for v in values) else None


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
        gain=_farthest_from_one([m.gain for m in per_sample]),
        top1_agreement=_mean([m.top1_agreement for m in per_sample]),
        top5_agreement=_mean([m.top5_agreement for m in per_sample]),
    )


def apply_checks(output: OutputMetrics, checks: dict[str, float]) -> list[dict]:
    """Gate ``output`` on declared top-k minima ({"top1": 0.99, "top5": 0.999}); returns what ran, for the report."""
    ran = []
    for metric, minimum in sorted(checks.items()):
        value = getattr(output, f"{metric}_agreement")
        passed = value is not None and value >= minimum
        ran.append({"output": output.name, "metric": metric, "min": minimum, "value": value, "passed": passed})
        if not passed:
            output.passed = False
            output.failures.append(f"{metric} agreement {value:.4f} < {minimum}" if value is not None
                                   else f"{metric} agreement could not be computed (the output has fewer than {5 if metric == 'top5' else 2} classes)")
    return ran


TOPK_METRICS = ("top1", "top5")


def parse_check(text: str) -> tuple[str, str, float]:
    """``--check NAME=top1:0.99`` -> (NAME, "top1", 0.99)."""
    from edgekit.errors import OptionsError

    name, sep, spec = text.rpartition("=")
    metric, colon, value = spec.partition(":")
    try:
        minimum = float(value)
    except ValueError:
        minimum = math.nan
    if not (sep and name and colon and metric in TOPK_METRICS and 0.0 <= minimum <= 1.0):
        raise OptionsError(f"--check {text!r}: expected OUTPUT=top1:MIN or OUTPUT=top5:MIN with MIN in [0, 1], e.g. logits=top1:0.99")
    return name, metric, minimum
