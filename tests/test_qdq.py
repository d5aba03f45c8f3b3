"""Explicit int8 quantization (QDQ) with onnxruntime, and its onnxruntime check against the float model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.calibration import SampleSet
from edgekit.errors import StageError
from edgekit.modelio import load_model
from edgekit.profiles import DEFAULT_TOLERANCES
from edgekit.qdq import check_qdq, quantize_qdq

INT8 = DEFAULT_TOLERANCES["int8"]


def _samples(model, count=16, scale=1.0, seed=7) -> SampleSet:
    loaded = load_model(model)
    rng = np.random.default_rng(seed)
    return SampleSet({s.name: (scale * rng.standard_normal((count, *s.shape))).astype(np.float32) for s in loaded.inputs}, "test")


@pytest.mark.parametrize("name", ["cnn", "superres", "transformer"])
def test_qdq_inserts_symmetric_per_channel_int8_and_passes_its_check(name, request, tmp_path):
    model = request.getfixturevalue(name)
    calibration = _samples(model)
    result = quantize_qdq(model, calibration, tmp_path / "m.qdq.onnx")
    assert result.dq_nodes > 0 and result.q_nodes > 0 and result.calibration_samples == 16

    qdq = onnx.load(str(result.path))
    initializers = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    dq = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear"]
    # TensorRT takes zero point 0 only, int8 only: every zero point must be an int8 zero
    for node in dq:
        zero = initializers[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name
    # weights are per-channel (one scale per output channel), biases stay float
    weight_dq = [n for n in dq if n.input[0] in initializers]
    assert weight_dq and any(initializers[n.input[1]].size > 1 for n in weight_dq)
    assert all(initializers[n.input[0]].dtype == np.int8 for n in weight_dq)
    consumers = [n for n in qdq.graph.node if n.op_type in ("Conv", "Gemm")]
    for node in consumers:
        if len(node.input) > 2:
            assert node.input[2] in initializers and initializers[node.input[2]].dtype == np.float32

    check = check_qdq(model, result.path, calibration.head(8), INT8)
    assert check.passed, check.reason
    assert check.samples == 8
    for output in check.outputs:
        assert output.finite and output.cosine > 0.995 and 20.0 < output.sqnr_db < 80.0  # real int8 error, not a float copy


@pytest.mark.parametrize("name", ["cnn", "superres"])
def test_check_catches_clipping_from_tiny_range_calibration(name, request, tmp_path):
    """Calibrating on data 100x smaller than deployment makes the activation scales clip: the check must fail."""
    model = request.getfixturevalue(name)
    deployment = _samples(model, count=8, seed=3)
    result = quantize_qdq(model, _samples(model, scale=0.01), tmp_path / "bad.qdq.onnx")
    check = check_qdq(model, result.path, deployment, INT8)
    assert not check.passed
    worst = check.outputs[0]
    assert worst.sqnr_db < INT8.min_sqnr_db and "SQNR" in check.reason
    # the same model calibrated properly passes on the same data
    good = quantize_qdq(model, _samples(model), tmp_path / "good.qdq.onnx")
    assert check_qdq(model, good.path, deployment, INT8).passed


def test_model_without_quantizable_ops_is_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    samples = SampleSet({"x": np.ones((4, 1, 4), np.float32)}, "test")
    with pytest.raises(StageError, match="none of the op types Conv, ConvTranspose, Gemm, MatMul"):
        quantize_qdq(path, samples, tmp_path / "relu.qdq.onnx")


def test_unknown_calibration_method(cnn, tmp_path):
    with pytest.raises(StageError, match="unknown calibration method 'magic'"):
        quantize_qdq(cnn, _samples(cnn, count=2), tmp_path / "x.onnx", calibration_method="magic")
