"""Small ONNX models built locally with ``onnx.helper`` and seeded random weights.

They are the shipped examples (``examples/make_models.py``) and the models the tests and
benchmarks run, so nothing is ever downloaded. Weights use He-style scaling so activations
stay in a sensible range and quantization metrics mean something.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

OPSET = 17


def _helpers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


class _GraphBuilder:
    """Collects nodes and initializers; names every tensor uniquely."""

    def __init__(self, seed: int) -> None:
        self.onnx, self.TensorProto, self.helper, self.numpy_helper = _helpers()
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.initializers: list = []
        self._counter = 0

    def name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape: tuple[int, ...], fan_in: int, prefix: str = "w") -> str:
        scale = np.sqrt(2.0 / fan_in)
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), prefix)

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def rename_last_output(self, new_name: str) -> None:
        node = self.nodes[-1]
        node.output[0] = new_name

    def model(self, graph_name: str, inputs: list, outputs: list):
        graph = self.helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        model = self.helper.make_model(
            graph,
            opset_imports=[self.helper.make_opsetid("", OPSET)],
            producer_name="edgekit.samples",
        )
        model.ir_version = 8
        self.onnx.checker.check_model(model, full_check=True)
        return model


def _conv(b: _GraphBuilder, x: str, c_in: int, c_out: int, k: int, stride: int = 1) -> str:
    w = b.weight((c_out, c_in, k, k), c_in * k * k)
    bias = b.const(np.zeros(c_out, np.float32) + 0.01, "b")
    pad = k // 2
    return b.op("Conv", [x, w, bias], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)


def _batchnorm(b: _GraphBuilder, x: str, channels: int) -> str:
    scale = b.const((1.0 + 0.1 * b.rng.standard_normal(channels)).astype(np.float32), "bn_scale")
    bias = b.const((0.1 * b.rng.standard_normal(channels)).astype(np.float32), "bn_bias")
    mean = b.const((0.1 * b.rng.standard_normal(channels)).astype(np.float32), "bn_mean")
    var = b.const((1.0 + 0.1 * b.rng.random(channels)).astype(np.float32), "bn_var")
    return b.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)


def tiny_cnn(size: int = 64, seed: int = 0):
    """Image classifier: Conv/BN/ReLU stages, global pooling, a Gemm head. Input ``image`` 1x3xHxW."""
    b = _GraphBuilder(seed)
    x = "image"
    channels = [3, 16, 32, 32]
    for c_in, c_out in zip(channels, channels[1:], strict=False):
        x = b.op("Relu", [_batchnorm(b, _conv(b, x, c_in, c_out, 3, stride=2), c_out)])
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    w = b.weight((channels[-1], 10), channels[-1])
    bias = b.const(np.zeros(10, np.float32), "b")
    b.op("Gemm", [x, w, bias])
    b.rename_last_output("logits")
    h, tp = b.helper, b.TensorProto
    return b.model(
        "tiny_cnn",
        [h.make_tensor_value_info("image", tp.FLOAT, [1, 3, size, size])],
        [h.make_tensor_value_info("logits", tp.FLOAT, [1, 10])],
    )


def super_resolution(size: int = 32, upscale: int = 3, seed: int = 1):
    """The classic sub-pixel super-resolution net: Conv stack then PixelShuffle (DepthToSpace)."""
    b = _GraphBuilder(seed)
    x = b.op("Relu", [_conv(b, "low_res", 1, 32, 5)])
    x = b.op("Relu", [_conv(b, x, 32, 32, 3)])
    x = _conv(b, x, 32, upscale * upscale, 3)
    b.op("DepthToSpace", [x], blocksize=upscale, mode="CRD")
    b.rename_last_output("high_res")
    h, tp = b.helper, b.TensorProto
    return b.model(
        "super_resolution",
        [h.make_tensor_value_info("low_res", tp.FLOAT, [1, 1, size, size])],
        [h.make_tensor_value_info("high_res", tp.FLOAT, [1, 1, size * upscale, size * upscale])],
    )


def _layer_norm(b: _GraphBuilder, x: str, dim: int) -> str:
    gamma = b.const(np.ones(dim, np.float32), "ln_gamma")
    beta = b.const(np.zeros(dim, np.float32), "ln_beta")
    return b.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)


def _linear(b: _GraphBuilder, x: str, d_in: int, d_out: int) -> str:
    w = b.weight((d_in, d_out), d_in)
    bias = b.const((0.01 * b.rng.standard_normal(d_out)).astype(np.float32), "b")
    return b.op("Add", [b.op("MatMul", [x, w]), bias])


def transformer_block(seq: int = 16, dim: int = 64, hidden: int = 128, seed: int = 2):
    """Pre-norm single-head attention and an MLP with residuals: MatMul, Softmax, LayerNorm."""
    b = _GraphBuilder(seed)
    x = "tokens"
    normed = _layer_norm(b, x, dim)
    q, k, v = (_linear(b, normed, dim, dim) for _ in range(3))
    k_t = b.op("Transpose", [k], perm=[0, 2, 1])
    scale = b.const(np.array(1.0 / np.sqrt(dim), np.float32), "scale")
    scores = b.op("Mul", [b.op("MatMul", [q, k_t]), scale])
    attention = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    x = b.op("Add", [x, _linear(b, attention, dim, dim)])
    mlp = _linear(b, b.op("Relu", [_linear(b, _layer_norm(b, x, dim), dim, hidden)]), hidden, dim)
    b.op("Add", [x, mlp])
    b.rename_last_output("features")
    h, tp = b.helper, b.TensorProto
    return b.model(
        "transformer_block",
        [h.make_tensor_value_info("tokens", tp.FLOAT, [1, seq, dim])],
        [h.make_tensor_value_info("features", tp.FLOAT, [1, seq, dim])],
    )


SAMPLES: dict[str, Callable] = {
    "tiny_cnn": tiny_cnn,
    "super_resolution": super_resolution,
    "transformer_block": transformer_block,
}


def write_sample(name: str, folder: Path) -> Path:
    """Build sample ``name`` and save it as ``folder/name.onnx``; returns the path."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(SAMPLES[name](), str(path))
    return path
