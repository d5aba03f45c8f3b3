"""Models with one planted numeric problem, for locate and per-layer fallback (issue 12).

Node names look like a PyTorch export's (``/mix/Conv``), so the tests can assert the exact node edgekit names.

* :func:`outlier_model`: ``/hot/Conv`` writes one channel 1000x larger than the rest; ``/mix/Conv`` reads it
  (its weights undo the scale on that channel, so its output is in the usual range). ``/mix/Conv`` is the
  layer whose input range is 1000x the rest of the network: one int8 scale for that tensor rounds the 31
  ordinary channels to almost nothing, and ``/mix/Conv``'s output is where that shows.
* :func:`overflow_model`: ``/big/Conv``'s outputs reach ~10^5, past fp16's 65504 (weights stay representable,
  below 2*10^4); ``/scale/Mul`` brings them back. With ``weight_overflow`` the weights themselves pass 65504.
* :func:`lstm_model`: an LSTM between two projections, for ncnn int8 (which has no int8 LSTM kernel).
"""

from __future__ import annotations

import numpy as np

CHANNELS = 32


def _builder():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


class _Net:
    def __init__(self, seed: int) -> None:
        self.onnx, self.tp, self.h, self.nh = _builder()
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, scope: str, inputs: list[str], **attrs) -> str:
        out = f"{scope}/{op}_output_0"
        self.nodes.append(self.h.make_node(op, inputs, [out], name=f"{scope}/{op}", **attrs))
        return out

    def conv(self, scope: str, x: str, c_in: int, c_out: int, k: int, weight: np.ndarray | None = None) -> str:
        w = weight if weight is not None else self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))
        self.const(f"{scope}.weight", w)
        self.const(f"{scope}.bias", np.full(c_out, 0.01))
        return self.node("Conv", scope, [x, f"{scope}.weight", f"{scope}.bias"], kernel_shape=[k, k], pads=[k // 2] * 4)

    def conv_relu(self, scope: str, x: str, c_in: int, c_out: int, k: int, weight: np.ndarray | None = None) -> str:
        return self.node("Relu", scope, [self.conv(scope, x, c_in, c_out, k, weight)])

    def model(self, name: str, inputs: list, output: str, out_shape: list[int]):
        self.nodes[-1].output[0] = output
        graph = self.h.make_graph(self.nodes, name, inputs, [self.h.make_tensor_value_info(output, self.tp.FLOAT, out_shape)], self.inits)
        model = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", 17)], producer_name="edgekit.tests.planted")
        model.ir_version = 8
        self.onnx.checker.check_model(model, full_check=True)
        return model

    def image_input(self, size: int):
        return self.h.make_tensor_value_info("x", self.tp.FLOAT, [1, 8, size, size])


def outlier_model(size: int = 32, seed: int = 0):
    net = _Net(seed)
    c = CHANNELS
    x = net.conv_relu("/stem", "x", 8, c, 3)
    x = net.conv_relu("/block1", x, c, c, 3)
    hot = net.rng.standard_normal((c, c, 1, 1)) * np.sqrt(2.0 / c)
    hot[0] *= 1000.0
    x = net.conv_relu("/hot", x, c, c, 1, hot)
    mix = net.rng.standard_normal((c, c, 1, 1)) * np.sqrt(2.0 / c)
    mix[:, 0] *= 0.001
    x = net.conv_relu("/mix", x, c, c, 1, mix)
    x = net.conv_relu("/block2", x, c, c, 3)
    net.conv("/head", x, c, 8, 3)
    return net.model("outlier", [net.image_input(size)], "y", [1, 8, size, size])


def overflow_model(size: int = 32, seed: int = 0, weight_overflow: bool = False):
    net = _Net(seed)
    c = CHANNELS
    scale = 3e5 if weight_overflow else 2e4
    x = net.conv_relu("/stem", "x", 8, c, 3)
    x = net.conv_relu("/block1", x, c, c, 3)
    big = net.rng.standard_normal((c, c, 1, 1)) * np.sqrt(2.0 / c) * scale
    x = net.conv_relu("/big", x, c, c, 1, big)
    x = net.node("Mul", "/scale", [x, net.const("/scale.factor", np.array(1.0 / scale))])
    x = net.conv_relu("/block2", x, c, c, 3)
    net.conv("/head", x, c, 8, 3)
    return net.model("overflow", [net.image_input(size)], "y", [1, 8, size, size])


def calibration(count: int = 32, size: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 8, size, size)).astype(np.float32)


def lstm_model(seq: int = 16, features: int = 8, hidden: int = 32, seed: int = 0):
    net = _Net(seed)
    h, tp = net.h, net.tp
    x = net.node("Transpose", "/to_time", ["x"], perm=[1, 0, 2])  # (seq, 1, features): ONNX LSTM's layout
    w = net.const("/lstm.W", net.rng.standard_normal((1, 4 * hidden, features)) * 0.3)
    r = net.const("/lstm.R", net.rng.standard_normal((1, 4 * hidden, hidden)) * 0.3)
    b = net.const("/lstm.B", np.zeros((1, 8 * hidden)))
    net.nodes.append(h.make_node("LSTM", [x, w, r, b], ["/lstm/LSTM_output_0"], name="/lstm/LSTM", hidden_size=hidden))
    x = net.node("Squeeze", "/lstm", ["/lstm/LSTM_output_0", _int64(net, "/lstm.axes", [1])])
    x = net.node("Transpose", "/to_batch", [x], perm=[1, 0, 2])
    net.node("MatMul", "/proj", [x, net.const("/proj.weight", net.rng.standard_normal((hidden, features)) * np.sqrt(1.0 / hidden))])
    return net.model("lstm", [h.make_tensor_value_info("x", tp.FLOAT, [1, seq, features])], "y", [1, seq, features])


def _int64(net: _Net, name: str, values: list[int]) -> str:
    net.inits.append(net.nh.from_array(np.asarray(values, np.int64), name))
    return name


def sequence_calibration(count: int = 32, seq: int = 16, features: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, seq, features)).astype(np.float32)
