"""ncnn int8 in Python: what ncnn2table and ncnn2int8 do, for the ncnn wheel that lacks both tools.

Following tools/quantize/ncnn2table.cpp (KL method) and ncnn2int8.cpp:

* weight scales per output channel: ``127 / absmax`` (``31 / absmax`` for 3x3 stride-1 convolutions,
  whose int8 Winograd F43 kernels need 6-bit weights), per group for depthwise convolutions;
* activation scales for each Convolution/ConvolutionDepthWise/InnerProduct input blob: run the
  fp32 model over the calibration samples with ncnn, histogram |x| into 2048 bins, choose the
  clipping threshold with the least KL divergence against a 128-bin quantization, scale = 127 / T;
* the table in ncnn's text format (``LAYER_param_0 s...`` weight lines, ``LAYER s`` blob lines);
* the rewrite: those layers get ``8=int8_scale_term`` (2 per-channel, 1 for depthwise) and int8
  weights (tag 0x000D4B38) followed by their weight and input scales in the .bin; Gemm layers with
  a constant B get int8 B with one scale and ``18=2`` (ncnn quantizes their input at run time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.backends.ncnn.format import Blob, Layer, raw_fp32, read_param, split_weights, tagged_int8, write_param

HISTOGRAM_BINS = 2048
TARGET_BINS = 128
KL_EPS = 1e-4
CALIBRATED = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


@dataclass
class Int8Result:
    param: str
    weights: bytes
    table: str
    quantized: list[str] = field(default_factory=list)  # "name (Type)"
    kept_float: list[str] = field(default_factory=list)
    kept_float_types: dict[str, str] = field(default_factory=dict)  # layer name -> ncnn type, for every layer in kept_float
    activation_scales: dict[str, float] = field(default_factory=dict)


def _round_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)  # C's round(), as ncnn's float2int8


def quantize_rows(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    rows = weights.reshape(len(scales), -1)
    return np.clip(_round_away(rows * scales[:, None]), -127, 127).astype(np.int8).reshape(-1)


def _safe_scale(limit: float, absmax: np.ndarray) -> np.ndarray:
    absmax = np.asarray(absmax, np.float64)
    return np.where(absmax > 0, limit / np.where(absmax > 0, absmax, 1.0), 1.0).astype(np.float32)


def weight_scales(layer: Layer, weight: np.ndarray) -> np.ndarray:
    if layer.type == "ConvolutionDepthWise":
        groups = layer.get_int(7, 1)
        return _safe_scale(127.0, np.abs(weight.reshape(groups, -1)).max(axis=1))
    outputs = layer.get_int(0)
    limit = 127.0
    if layer.type == "Convolution":
        kw = layer.get_int(1)
        kh, dw, sw = layer.get_int(11, kw), layer.get_int(2, 1), layer.get_int(3, 1)
        dh, sh = layer.get_int(12, dw), layer.get_int(13, sw)
        if (kw, kh, dw, dh, sw, sh) == (3, 3, 1, 1, 1, 1):
            limit = 31.0
    return _safe_scale(limit, np.abs(weight.reshape(outputs, -1)).max(axis=1))


def _mass(cumulative: np.ndarray, density: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral of a piecewise-constant density (unit-width bins) from 0 to x."""
    whole = np.minimum(np.floor(x).astype(np.int64), len(density))
    part = np.where(whole < len(density), density[np.minimum(whole, len(density) - 1)], 0.0)
    return cumulative[whole] + (x - whole) * part


def kl_divergence(normed: np.ndarray, threshold: int) -> float:
    """ncnn2table's KL divergence for one threshold bin T: the clipped histogram against its
    128-level quantization expanded back to T bins. Same sums as ncnn's loops, via cumulative masses;
    like ncnn, the quantization sees only the histogram below T (outliers are folded into the clip only)."""
    cumulative = np.concatenate([[0.0], np.cumsum(normed)])
    clip = normed[:threshold] + KL_EPS
    clip[-1] += normed[threshold:].sum()
    width = threshold / TARGET_BINS
    edges = np.arange(TARGET_BINS + 1) * width
    edges[-1] = threshold
    quantized = np.diff(_mass(cumulative, normed, edges)) / width
    q_cumulative = np.concatenate([[0.0], np.cumsum(quantized * width)])
    positions = np.arange(threshold + 1, dtype=np.float64) / width
    expanded = np.diff(_mass(q_cumulative, quantized * width, positions)) + KL_EPS
    return float(np.sum(clip * np.log(clip / expanded)))


def kl_threshold_bin(histogram: np.ndarray) -> int:
    """The threshold bin (128..2047) with the least KL divergence, as ncnn2table's quantize_KL picks it."""
    total = histogram.sum()
    if total == 0:
        return HISTOGRAM_BINS - 1
    normed = histogram.astype(np.float64) / total
    divergences = [kl_divergence(normed, t) for t in range(TARGET_BINS, HISTOGRAM_BINS)]
    return TARGET_BINS + int(np.argmin(divergences))


def activation_scales(run: Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]],
                      samples: list[dict[str, np.ndarray]], blobs: list[str]) -> dict[str, float]:
    """Two passes over the samples as ncnn2table does: absmax, then 2048-bin |x| histograms (zeros skipped)."""
    absmax = dict.fromkeys(blobs, 0.0)
    for feed in samples:
        for name, value in run(feed, blobs).items():
            absmax[name] = max(absmax[name], float(np.abs(value).max(initial=0.0)))
    histograms = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in blobs}
    for feed in samples:
        for name, value in run(feed, blobs).items():
            if absmax[name] == 0:
                continue
            magnitude = np.abs(value[value != 0]).astype(np.float64)
            index = np.minimum((magnitude / absmax[name] * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
            histograms[name] += np.bincount(index, minlength=HISTOGRAM_BINS)
    scales = {}
    for name in blobs:
        if absmax[name] == 0:
            scales[name] = 1.0
            continue
        threshold = (kl_threshold_bin(histograms[name]) + 0.5) * absmax[name] / HISTOGRAM_BINS
        scales[name] = 127.0 / threshold
    return scales


def calibration_blobs(layers: list[Layer]) -> list[str]:
    seen: list[str] = []
    for layer in layers:
        if layer.type in CALIBRATED and layer.bottoms and layer.bottoms[0] not in seen:
            seen.append(layer.bottoms[0])
    return seen


def _table(layers: list[Layer], w_scales: dict[str, np.ndarray], a_scales: dict[str, float]) -> str:
    lines = [f"{name}_param_0 " + " ".join(f"{s:f}" for s in scales) for name, scales in w_scales.items()]
    by_name = {layer.name: layer for layer in layers}
    lines += [f"{name} {a_scales[by_name[name].bottoms[0]]:f}" for name in w_scales]
    return "\n".join(lines) + "\n"


def _gemm_int8(layer: Layer, blobs: list[Blob]) -> bytes:
    """ncnn2int8's quantize_gemm for a constant B (A stays an input): B as N rows of K, one scale."""
    n, k = layer.get_int(8), layer.get_int(9)
    out, scales = b"", b""
    for blob in blobs:
        if blob.label != "B":
            out += blob.raw
            continue
        b_data = blob.values.reshape(k, n).T if layer.get_int(3) == 0 else blob.values.reshape(n, k)
        scale = _safe_scale(127.0, np.abs(b_data).max(initial=0.0)).reshape(1)
        out += tagged_int8(np.clip(_round_away(b_data * scale[0]), -127, 127))
        scales = raw_fp32(scale)
    layer.set(3, 1)
    layer.set(18, 2)
    return out + scales


def quantize(param_text: str, bin_data: bytes, run: Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]],
             samples: Iterable[dict[str, np.ndarray]], float_layers: frozenset[str] = frozenset()) -> Int8Result:
    """The int8 .param/.bin and calibration table for an fp32 ncnn model (weights stored as fp32); the layers
    named in ``float_layers`` stay fp32 (per-layer fallback)."""
    layers = read_param(param_text)
    weights = split_weights(layers, bin_data)
    a_scales = activation_scales(run, list(samples), calibration_blobs([layer for layer in layers if layer.name not in float_layers]))
    w_scales: dict[str, np.ndarray] = {}
    result = Int8Result(param="", weights=b"", table="")
    out = bytearray()
    for layer in layers:
        blobs = weights[layer.name]
        weight = next((b for b in blobs if b.label == "weight"), None)
        if layer.name in float_layers:
            out += b"".join(b.raw for b in blobs)
            result.kept_float.append(f"{layer.name} ({layer.type}, fallback)")
            result.kept_float_types[layer.name] = layer.type
        elif layer.type in CALIBRATED and weight is not None and weight.storage != "int8":
            scales = weight_scales(layer, weight.values)
            w_scales[layer.name] = scales
            depthwise = layer.type == "ConvolutionDepthWise"
            out += tagged_int8(quantize_rows(weight.values, scales))
            out += b"".join(b.raw for b in blobs if b is not weight)
            out += raw_fp32(scales) + raw_fp32(np.array([a_scales[layer.bottoms[0]]], np.float32))
            layer.set(8, 1 if depthwise else 2)
            result.quantized.append(f"{layer.name} ({layer.type})")
        elif layer.type == "Gemm" and layer.get_int(5) and layer.get_int(4) == 0:
            out += _gemm_int8(layer, blobs)
            result.quantized.append(f"{layer.name} (Gemm, weights only)")
        else:
            out += b"".join(b.raw for b in blobs)
            if blobs:
                result.kept_float.append(f"{layer.name} ({layer.type})")
                result.kept_float_types[layer.name] = layer.type
    result.param, result.weights = write_param(layers), bytes(out)
    result.table = _table(layers, w_scales, a_scales)
    result.activation_scales = {k: round(v, 6) for k, v in a_scales.items()}
    return result


def write_outputs(result: Int8Result, param: Path, weights: Path, table: Path) -> None:
    from edgekit.fsutil import atomic_write_bytes, atomic_write_text

    atomic_write_text(param, result.param)
    atomic_write_text(table, result.table)
    atomic_write_bytes(weights, result.weights)
