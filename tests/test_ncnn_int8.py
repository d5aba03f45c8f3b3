"""edgekit's Python stand-in for ncnn2table/ncnn2int8: the KL search against a literal port of
ncnn's loops, the weight scales ncnn picks, and the .param/.bin walker refusing what it cannot account for."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from edgekit.backends.ncnn.format import TAG_FP16, TAG_INT8, NcnnFormatError, read_param, split_weights, write_param
from edgekit.backends.ncnn.int8 import HISTOGRAM_BINS, kl_divergence, kl_threshold_bin, quantize_rows, weight_scales


def _ncnn_kl(normed: list[float], threshold: int, target_bin: int = 128, eps: float = 1e-4) -> float:
    """tools/quantize/ncnn2table.cpp quantize_KL, one threshold, loop for loop."""
    bins = len(normed)
    clip = [eps] * threshold
    for j in range(threshold):
        clip[j] += normed[j]
    for j in range(threshold, bins):
        clip[threshold - 1] += normed[j]
    per_bin = threshold / target_bin
    quant = [0.0] * target_bin
    end = per_bin
    right_lower = math.floor(end)
    right_scale = end - right_lower
    if right_scale > 0:
        quant[0] += right_scale * normed[right_lower]
    for k in range(right_lower):
        quant[0] += normed[k]
    quant[0] /= right_lower + right_scale
    for j in range(1, target_bin - 1):
        start, end = j * per_bin, (j + 1) * per_bin
        left_upper, right_lower = math.ceil(start), math.floor(end)
        left_scale, right_scale = left_upper - start, end - right_lower
        if left_scale > 0:
            quant[j] += left_scale * normed[left_upper - 1]
        if right_scale > 0:
            quant[j] += right_scale * normed[right_lower]
        for k in range(left_upper, right_lower):
            quant[j] += normed[k]
        quant[j] /= right_lower - left_upper + left_scale + right_scale
    start = threshold - per_bin
    left_upper = math.ceil(start)
    left_scale = left_upper - start
    if left_scale > 0:
        quant[-1] += left_scale * normed[left_upper - 1]
    for k in range(left_upper, threshold):
        quant[-1] += normed[k]
    quant[-1] /= threshold - left_upper + left_scale
    expand = [eps] * threshold
    end = per_bin
    right_lower = math.floor(end)
    right_scale = end - right_lower
    if right_scale > 0:
        expand[right_lower] += right_scale * quant[0]
    for k in range(right_lower):
        expand[k] += quant[0]
    for j in range(1, target_bin - 1):
        start, end = j * per_bin, (j + 1) * per_bin
        left_upper, right_lower = math.ceil(start), math.floor(end)
        left_scale, right_scale = left_upper - start, end - right_lower
        if left_scale > 0:
            expand[left_upper - 1] += left_scale * quant[j]
        if right_scale > 0:
            expand[right_lower] += right_scale * quant[j]
        for k in range(left_upper, right_lower):
            expand[k] += quant[j]
    start = threshold - per_bin
    left_upper = math.ceil(start)
    left_scale = left_upper - start
    if left_scale > 0:
        expand[left_upper - 1] += left_scale * quant[-1]
    for k in range(left_upper, threshold):
        expand[k] += quant[-1]
    return sum(a * math.log(a / b) for a, b in zip(clip, expand, strict=True))


def _heavy_tailed_histogram(seed: int = 0) -> np.ndarray:
    values = np.abs(np.random.default_rng(seed).standard_t(3, 200_000))
    index = np.minimum((values / values.max() * HISTOGRAM_BINS).astype(int), HISTOGRAM_BINS - 1)
    return np.bincount(index, minlength=HISTOGRAM_BINS)


@pytest.mark.parametrize("threshold", [128, 129, 200, 333, 640, 1000, 1537, 2047])
def test_kl_divergence_matches_ncnn2table_loops(threshold):
    histogram = _heavy_tailed_histogram()
    normed = histogram / histogram.sum()
    assert kl_divergence(normed, threshold) == pytest.approx(_ncnn_kl(normed.tolist(), threshold), rel=1e-6, abs=1e-9)


def test_kl_threshold_clips_outliers_but_not_a_uniform_range():
    heavy = kl_threshold_bin(_heavy_tailed_histogram())
    assert 128 <= heavy < 1024  # a few far outliers are clipped away
    uniform = kl_threshold_bin(np.full(HISTOGRAM_BINS, 100))
    assert uniform > 1900  # nothing to clip
    assert kl_threshold_bin(np.zeros(HISTOGRAM_BINS, np.int64)) == HISTOGRAM_BINS - 1


def _conv(name: str, stride: int, kernel: int = 3, outputs: int = 2, inputs: int = 1) -> str:
    size = outputs * inputs * kernel * kernel
    return f"Convolution {name} 1 1 in0 {name}_out 0={outputs} 1={kernel} 3={stride} 5=1 6={size}"


def test_weight_scales_follow_ncnn2table():
    weight = np.array([0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0, 0, 0, 0, 0, 0, 0, -4.0], np.float32)
    winograd, strided = (read_param(f"7767517\n1 2\n{line}\n")[0] for line in (_conv("a", 1), _conv("b", 2)))
    # 3x3 stride-1 convolutions get 6-bit weights (ncnn's int8 Winograd F43), others 8-bit, per output channel
    np.testing.assert_allclose(weight_scales(winograd, weight), [31.0, 31.0 / 4])
    np.testing.assert_allclose(weight_scales(strided, weight), [127.0, 127.0 / 4])
    zero = weight_scales(strided, np.zeros(18, np.float32))
    np.testing.assert_array_equal(zero, [1.0, 1.0])  # an all-zero channel must not become inf


def test_quantize_rows_rounds_half_away_from_zero_and_clamps():
    values = np.array([0.5, -0.5, 1.5, -2.5, 300.0, -300.0], np.float32)
    assert quantize_rows(values, np.array([1.0], np.float32)).tolist() == [1, -1, 2, -3, 127, -127]


def _fp32_blob(values: list[float]) -> bytes:
    return struct.pack("<I", 0) + np.asarray(values, "<f4").tobytes()


def test_param_round_trip_and_exact_weight_walk():
    text = ("7767517\n3 3\nInput in0 0 1 in0 0=4\n"
            "Convolution conv 1 1 in0 1 0=1 1=1 5=1 6=4\n"
            "LayerNorm ln 1 1 1 out0 0=4 1=1.000000e-05 2=1\n")
    layers = read_param(text)
    assert read_param(write_param(layers))[1].params == layers[1].params
    assert layers[2].get(1) == pytest.approx(1e-5)
    half = struct.pack("<I", TAG_FP16) + np.array([1, 2, 3, 4], "<f2").tobytes()
    data = half + np.array([0.5], "<f4").tobytes() + np.ones(4, "<f4").tobytes() + np.zeros(4, "<f4").tobytes()
    blobs = split_weights(layers, data)
    assert [(b.label, b.storage) for b in blobs["conv"]] == [("weight", "fp16"), ("bias", "raw")]
    np.testing.assert_array_equal(blobs["conv"][0].values, [1, 2, 3, 4])
    assert b"".join(b.raw for bs in blobs.values() for b in bs) == data
    with pytest.raises(NcnnFormatError, match="account for"):
        split_weights(layers, data + b"\0" * 8)  # bytes no known layer claims
    with pytest.raises(NcnnFormatError, match="runs past the end"):
        split_weights(layers, data[:-8])


def test_already_int8_and_unwalkable_layers_are_refused():
    int8 = read_param("7767517\n1 2\nConvolution c 1 1 a b 0=1 1=1 6=1 8=2\n")
    with pytest.raises(NcnnFormatError, match="already int8"):
        split_weights(int8, struct.pack("<I", TAG_INT8) + b"\1\0\0\0")
    deformable = read_param("7767517\n1 2\nDeformableConv2D l 1 1 a b 0=4 1=3\n")
    with pytest.raises(NcnnFormatError, match="does not walk the weights of ncnn DeformableConv2D"):
        split_weights(deformable, _fp32_blob([0.0] * 16))


def test_recurrent_layer_weights_are_walked():
    """lstm.cpp load_model: W_xc [dirs, 4*hidden, input], bias [dirs, 4, hidden], W_hc [dirs, 4*hidden, hidden], tagged."""
    lstm = read_param("7767517\n1 2\nLSTM l 1 1 a b 0=4 1=96 2=2\n")  # hidden 4, input 3, bidirectional: 1 = 3*4*4*2
    blobs = split_weights(lstm, _fp32_blob([1.0] * 96) + _fp32_blob([2.0] * 32) + _fp32_blob([3.0] * 128))["l"]
    assert [(b.label, len(b.values)) for b in blobs] == [("weight_xc", 96), ("bias_c", 32), ("weight_hc", 128)]
    with pytest.raises(NcnnFormatError, match="account for"):
        split_weights(lstm, _fp32_blob([1.0] * 96) + _fp32_blob([2.0] * 32) + _fp32_blob([3.0] * 129))
