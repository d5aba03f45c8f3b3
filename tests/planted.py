"""Planted models that reproduce what real exports do to converters (built locally with onnx.helper, seeded).

Each one carries one failure class the real-model zoo showed: names converters reject, an RNN state whose batch
axis is not axis 0 with scalar and int64 inputs, an ``If`` on a sample-rate input, onnxruntime-quantized ops,
dynamic dims, a declared output shape that is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, opset: int = OPSET) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgekit.tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def bad_names(path: Path) -> Path:
    """paddle2onnx-style node names (``Conv@0``, ``Softmax@0``), an empty one, TF-style ``a/b:0`` tensor names,
    and I/O names with ``:`` and ``/``: a small classifier, image ``input:0`` -> scores ``prob/out:0``."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    fc = (rng.standard_normal((8, 10)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input:0", "conv/w:0"], ["conv/out:0"], name="Conv@0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv/out:0"], ["a/b:0"], name=""),
        helper.make_node("GlobalAveragePool", ["a/b:0"], ["pool:0"], name="pool/GAP:0"),
        helper.make_node("Flatten", ["pool:0"], ["flat"], name="Flatten@0"),
        helper.make_node("MatMul", ["flat", "fc/w:0"], ["logits:0"], name="MatMul@0"),
        helper.make_node("Softmax", ["logits:0"], ["prob/out:0"], name="Softmax@0", axis=-1),
    ]
    graph = helper.make_graph(nodes, "bad_names", [helper.make_tensor_value_info("input:0", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("prob/out:0", TensorProto.FLOAT, [1, 10])],
                              [_const("conv/w:0", w), _const("fc/w:0", fc)])
    return _save(graph, path)


def rnn_state(path: Path) -> Path:
    """A voice-model step: audio ``x`` [1, 16], an RNN state ``state`` [layers=2, batch=1, hidden=8] (batch on axis 1),
    token ``ids`` int64 [1, 4] and a scalar ``gain`` float []. Outputs ``y`` [1, 8] and the new state [2, 1, 8]."""
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    emb = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),  # [1, 8]
        helper.make_node("Gather", ["emb", "ids"], ["tok"], axis=0),  # [1, 4, 8]
        helper.make_node("ReduceSum", ["tok", "axis1"], ["tok_sum"], keepdims=0),  # [1, 8]
        helper.make_node("Add", ["xw", "tok_sum"], ["h0"]),
        helper.make_node("Mul", ["h0", "gain"], ["h1"]),
        helper.make_node("Tanh", ["state"], ["state_t"]),  # [2, 1, 8]
        helper.make_node("ReduceSum", ["state_t", "axis0"], ["state_sum"], keepdims=0),  # [1, 8]
        helper.make_node("Add", ["h1", "state_sum"], ["y"]),
        helper.make_node("Add", ["state_t", "y"], ["state_out"]),  # [2, 1, 8]
    ]
    graph = helper.make_graph(
        nodes, "rnn_state",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]), helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 8]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4]), helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]), helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, 1, 8])],
        [_const("w", w), _const("emb", emb), _const("axis1", np.array([1], np.int64)), _const("axis0", np.array([0], np.int64))])
    return _save(graph, path)


def _branch(name: str, x: str, op: str, weight: np.ndarray) -> onnx.GraphProto:
    node = helper.make_node(op, [x, f"{name}_w"], [f"{name}_out"])
    return helper.make_graph([node], name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)], [_const(f"{name}_w", weight)])


def sample_rate_if(path: Path) -> Path:
    """``If (sr == 16000)`` picks a filter bank, and an ``If`` on the input's length (a ``Shape`` branch) picks a bias:
    what a VAD that takes ``sr`` does. Input ``audio`` [1, 1, 64] float, ``sr`` int64 scalar; output ``features``."""
    rng = np.random.default_rng(5)
    bank16, bank8 = ((rng.standard_normal((64, 32)) * 0.2).astype(np.float32) for _ in range(2))
    nodes = [
        helper.make_node("Constant", [], ["sr16k"], value=_const("sr16k_value", np.array(16000, np.int64))),
        helper.make_node("Equal", ["sr", "sr16k"], ["is16k"]),
        helper.make_node("If", ["is16k"], ["filtered"], then_branch=_branch("at16k", "audio", "MatMul", bank16),
                         else_branch=_branch("at8k", "audio", "MatMul", bank8)),
        helper.make_node("Shape", ["audio"], ["shape"]),
        helper.make_node("Gather", ["shape", "last"], ["length"], axis=0),
        helper.make_node("Greater", ["length", "min_length"], ["long"]),
        helper.make_node("If", ["long"], ["biased"], then_branch=_branch("long_bias", "filtered", "Add", np.full(32, 0.5, np.float32)),
                         else_branch=_branch("short_bias", "filtered", "Sub", np.full(32, 0.5, np.float32))),
        helper.make_node("Relu", ["biased"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes, "sample_rate_if",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, 64]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 1, 32])],
        [_const("last", np.array(2, np.int64)), _const("min_length", np.array(32, np.int64))])
    return _save(graph, path)


def dynamic_cnn(path: Path) -> Path:
    """A conv net whose batch, height and width are all dynamic (``N``, ``H``, ``W``)."""
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((4, 1, 3, 3)) * 0.4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["conv"], ["features"])]
    graph = helper.make_graph(nodes, "dynamic_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, "H", "W"])], [_const("w", w)])
    return _save(graph, path)


def wrong_output_shape(path: Path) -> Path:
    """Declares its output [1, seqlen] but returns [T, 1, classes], as ddddocr's CTC recognizer does."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((16, 12)) * 0.4).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),  # [1, 6, 16] -> [6, 1, 16]
             helper.make_node("MatMul", ["t", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "wrong_output_shape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seqlen"])], [_const("w", w)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))  # the checker would keep the declared shape: exactly what such exports ship
    return path


def float_conv_lstm(path: Path) -> Path:
    """Conv -> reshape to a sequence -> LSTM -> MatMul: what onnxruntime's quantize_dynamic turns into ConvInteger,
    DynamicQuantizeLSTM and MatMulInteger (see ort_quantized)."""
    rng = np.random.default_rng(8)
    hidden = 8
    conv_w = (rng.standard_normal((4, 1, 3, 3)) * 0.4).astype(np.float32)
    lstm_w = (rng.standard_normal((1, 4 * hidden, 16)) * 0.3).astype(np.float32)
    lstm_r = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.3).astype(np.float32)
    lstm_b = (rng.standard_normal((1, 8 * hidden)) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((hidden, 6)) * 0.4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),  # [1, 4, 4, 8]
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("Transpose", ["act"], ["seq_first"], perm=[3, 0, 1, 2]),  # [8, 1, 4, 4]
        helper.make_node("Reshape", ["seq_first", "seq_shape"], ["seq"]),  # [8, 1, 16]
        helper.make_node("LSTM", ["seq", "lstm_w", "lstm_r", "lstm_b"], ["lstm_y"], hidden_size=hidden),  # [8, 1, 1, 8]
        helper.make_node("Squeeze", ["lstm_y", "dir_axis"], ["lstm_out"]),  # [8, 1, 8]
        helper.make_node("MatMul", ["lstm_out", "fc"], ["logits"]),  # [8, 1, 6]
    ]
    graph = helper.make_graph(nodes, "conv_lstm", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [8, 1, 6])],
                              [_const("conv_w", conv_w), _const("lstm_w", lstm_w), _const("lstm_r", lstm_r), _const("lstm_b", lstm_b),
                               _const("fc", fc), _const("seq_shape", np.array([8, 1, 16], np.int64)), _const("dir_axis", np.array([1], np.int64))])
    return _save(graph, path)


def ort_quantized(float_model: Path, path: Path) -> Path:
    """``float_model`` through onnxruntime.quantization.quantize_dynamic (ConvInteger, MatMulInteger,
    DynamicQuantizeLinear, com.microsoft DynamicQuantizeLSTM), the way ddddocr's common_old.onnx was made."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_model), str(path), op_types_to_quantize=["Conv", "MatMul", "LSTM"], weight_type=QuantType.QUInt8)
    return path


def microsoft_op(path: Path) -> Path:
    """A com.microsoft op edgekit cannot rewrite (Gelu from onnxruntime's fusions)."""
    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft", name="gelu_fused")
    graph = helper.make_graph([node], "ms_gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def lstm_as_exported(path: Path, bidirectional: bool = False) -> Path:
    """An LSTM the way PyTorch exports it and onnxsim leaves it: zero initial states as constants, and either the
    last hidden state Y_h read by the head (forward) or Y -> Transpose -> one merged 2-D Reshape (bidirectional).
    Input ``mels`` [1, 12, 10], output ``embedding``."""
    rng = np.random.default_rng(9)
    hidden, dirs = 6, 2 if bidirectional else 1
    inits = [_const("W", (rng.standard_normal((dirs, 4 * hidden, 10)) * 0.3).astype(np.float32)),
             _const("R", (rng.standard_normal((dirs, 4 * hidden, hidden)) * 0.3).astype(np.float32)),
             _const("B", (rng.standard_normal((dirs, 8 * hidden)) * 0.1).astype(np.float32)),
             _const("zeros", np.zeros((dirs, 1, hidden), np.float32)), _const("head", (rng.standard_normal((dirs * hidden, 4)) * 0.5).astype(np.float32))]
    nodes = [helper.make_node("Transpose", ["mels"], ["seq"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["seq", "W", "R", "B", "", "zeros", "zeros"], ["Y", "Y_h", "Y_c"], hidden_size=hidden,
                              direction="bidirectional" if bidirectional else "forward")]
    if bidirectional:
        inits.append(_const("flat", np.array([12, 2 * hidden], np.int64)))
        nodes += [helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["Yt", "flat"], ["features"])]
        out_shape = [12, 4]
    else:
        inits.append(_const("axis0", np.array([0], np.int64)))
        nodes += [helper.make_node("Squeeze", ["Y_h", "axis0"], ["features"])]
        out_shape = [1, 4]
    nodes.append(helper.make_node("MatMul", ["features", "head"], ["embedding"]))
    graph = helper.make_graph(nodes, "lstm_as_exported", [helper.make_tensor_value_info("mels", TensorProto.FLOAT, [1, 12, 10])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, out_shape)], inits)
    return _save(graph, path)


def opset11_softmax(path: Path) -> Path:
    """SqueezeNet's tail at opset 11: Conv -> GlobalAveragePool -> Softmax(axis=1) over [1, 10, 1, 1] (the old
    Softmax flattens from axis 1; onnx2tf applied it to a size-1 axis after its NHWC transpose)."""
    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]), helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
             helper.make_node("Softmax", ["pooled"], ["prob"], axis=1)]
    graph = helper.make_graph(nodes, "opset11_softmax", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10, 1, 1])],
                              [_const("w", (rng.standard_normal((10, 3, 3, 3)) * 0.5).astype(np.float32))])
    return _save(graph, path, opset=11)


def ceil_mode_pool(path: Path) -> Path:
    """MTCNN R-Net's trunk: (Conv -> PRelu -> MaxPool(3, stride 2, ceil_mode)) twice -> Conv. Input ``image``
    [1, 3, 24, 24]: the first pool sees 22 rows, so ceil mode adds a window that overhangs the end."""
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"]), helper.make_node("PRelu", ["c1", "slope1"], ["a1"]),
             helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             helper.make_node("Conv", ["p1", "w2"], ["c2"]), helper.make_node("PRelu", ["c2", "slope2"], ["a2"]),
             helper.make_node("MaxPool", ["a2"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
             helper.make_node("Conv", ["p2", "w3"], ["features"])]
    graph = helper.make_graph(nodes, "ceil_mode_pool", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 24, 24])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 6, 4, 4])],
                              [_const("w1", (rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32)),
                               _const("slope1", np.full((8, 1, 1), 0.25, np.float32)),
                               _const("w2", (rng.standard_normal((12, 8, 3, 3)) * 0.3).astype(np.float32)),
                               _const("slope2", np.full((12, 1, 1), 0.25, np.float32)),
                               _const("w3", (rng.standard_normal((6, 12, 2, 2)) * 0.3).astype(np.float32))])
    return _save(graph, path)
