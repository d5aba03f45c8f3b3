"""Read and write ncnn's .param/.bin files (the formats of ncnn's src/paramdict.cpp and modelbin.cpp).

A .param is text: magic ``7767517``, ``layer_count blob_count``, then one line per layer:
``Type name n_bottoms n_tops bottoms... tops... key=value...``. A .bin is the layers' weights, in
layer order, with no index: each layer loads what its ``load_model`` asks for, either *tagged* blobs
(a 4-byte tag saying fp32/fp16/int8) or *raw* float32 blobs. So walking a .bin needs each layer
type's weight layout; :func:`weight_layout` knows the ones pnnx emits, and :func:`split_weights`
refuses a file whose size does not add up exactly, rather than guess.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_EXTRA = 0x0002C056
TAGGED, RAW = 0, 1


class NcnnFormatError(ValueError):
    """The .param/.bin pair is not what ncnn's formats describe."""


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: list[tuple[str, str]] = field(default_factory=list)  # raw "key=value" pairs, order kept

    def get(self, key: int, default: float = 0) -> float:
        for k, v in self.params:
            if k == str(key):
                return float(v) if any(c in v for c in ".eE") else int(v)
        return default

    def get_int(self, key: int, default: int = 0) -> int:
        return int(self.get(key, default))

    def set(self, key: int, value: int | float) -> None:
        text = f"{value:e}" if isinstance(value, float) else str(value)
        for i, (k, _) in enumerate(self.params):
            if k == str(key):
                self.params[i] = (k, text)
                return
        self.params.append((str(key), text))

    def line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        blobs = " ".join([*self.bottoms, *self.tops])
        params = " ".join(f"{k}={v}" for k, v in self.params)
        return " ".join(part for part in (head, blobs, params) if part)


def read_param(text: str) -> list[Layer]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [MAGIC] or len(lines) < 2:
        raise NcnnFormatError("not an ncnn .param file (magic 7767517 missing)")
    layer_count = int(lines[1][0])
    layers = []
    for tokens in lines[2:]:
        nb, nt = int(tokens[2]), int(tokens[3])
        blobs = tokens[4 : 4 + nb + nt]
        params = [tuple(tok.split("=", 1)) for tok in tokens[4 + nb + nt :]]
        layers.append(Layer(tokens[0], tokens[1], blobs[:nb], blobs[nb:], params))  # type: ignore[arg-type]
    if len(layers) != layer_count:
        raise NcnnFormatError(f".param declares {layer_count} layers but lists {len(layers)}")
    return layers


def write_param(layers: list[Layer]) -> str:
    blobs = {b for layer in layers for b in (*layer.bottoms, *layer.tops)}
    return "\n".join([MAGIC, f"{len(layers)} {len(blobs)}", *(layer.line() for layer in layers)]) + "\n"


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def weight_layout(layer: Layer) -> list[tuple[str, int, int]]:
    """What ``load_model`` of this layer type reads: [(label, element count, TAGGED|RAW)]."""
    t, g = layer.type, layer.get_int
    if t.startswith(("Convolution", "Deconvolution")):
        if g(19) == 1 or g(28) == 1:  # dynamic weights come in as a second input
            return []
        if g(8) != 0:
            raise NcnnFormatError(f"layer {layer.name} is already int8 (8={g(8)})")
        blobs = [("weight", g(6), TAGGED)]
        return blobs + ([("bias", g(0), RAW)] if g(5) else [])
    if t == "InnerProduct":
        if g(8) != 0:
            raise NcnnFormatError(f"layer {layer.name} is already int8 (8={g(8)})")
        return [("weight", g(2), TAGGED)] + ([("bias", g(0), RAW)] if g(1) else [])
    if t == "Gemm":
        m, n, k = g(7), g(8), g(9)
        blobs = []
        if g(4):
            blobs.append(("A", m * k, TAGGED))
        if g(5):
            blobs.append(("B", n * k, TAGGED))
        broadcast = g(10)
        if g(6) and broadcast != -1:
            blobs.append(("C", {0: 1, 1: m, 2: m, 3: n * m, 4: n}[broadcast], TAGGED))
        if g(18):
            raise NcnnFormatError(f"layer {layer.name} is already quantized (18={g(18)})")
        return blobs
    if t in ("LayerNorm", "InstanceNorm"):
        return [("gamma", g(0), RAW), ("beta", g(0), RAW)] if g(2, 1) else []
    if t == "GroupNorm":
        return [("gamma", g(1), RAW), ("beta", g(1), RAW)] if g(3, 1) else []
    if t == "RMSNorm":
        return [("gamma", g(0), RAW)] if g(2, 1) else []
    if t == "BatchNorm":
        return [(label, g(0), RAW) for label in ("slope", "mean", "var", "bias")]
    if t == "Scale":
        if g(0) == -233:
            return []
        return [("scale", g(0), RAW)] + ([("bias", g(0), RAW)] if g(1) else [])
    if t in ("Bias", "PReLU"):
        return [("data", g(0), RAW)]
    if t == "Normalize":
        return [("scale", g(3), RAW)]
    if t == "Embed":
        return [("weight", g(3), TAGGED)] + ([("bias", g(0), RAW)] if g(2) else [])
    if t == "MemoryData":
        w, h, d, c = g(0), g(1), g(11), g(2)
        dims = [w, h, d, c] if d else [w, h, c] if c else [w, h] if h else [w] if w else []
        return [("data", int(np.prod(dims)), g(21, 1))] if dims else []
    if t in ("LSTM", "GRU", "RNN"):
        return _recurrent_layout(layer)
    if t == "MultiHeadAttention":
        if g(18):
            raise NcnnFormatError(f"layer {layer.name} is already quantized (18={g(18)})")
        embed, size = g(0), g(2)
        qdim, kdim, vdim = size // embed if embed else 0, g(3, embed), g(4, embed)
        return [("q_weight", embed * qdim, TAGGED), ("q_bias", embed, RAW), ("k_weight", embed * kdim, TAGGED), ("k_bias", embed, RAW),
                ("v_weight", embed * vdim, TAGGED), ("v_bias", embed, RAW), ("out_weight", qdim * embed, TAGGED), ("out_bias", qdim, RAW)]
    if t == "DeformableConv2D":
        raise NcnnFormatError(f"layer {layer.name}: edgekit does not walk the weights of ncnn {t} layers")
    return []


def _recurrent_layout(layer: Layer) -> list[tuple[str, int, int]]:
    """ncnn's lstm.cpp/gru.cpp/rnn.cpp load_model: W_xc, bias, W_hc (and LSTM's projection W_hr), all tagged."""
    g = layer.get_int
    if g(8) != 0:
        raise NcnnFormatError(f"layer {layer.name} is already int8 (8={g(8)})")
    outputs, directions = g(0), 2 if g(2) == 2 else 1
    hidden = g(3, outputs) if layer.type == "LSTM" else outputs
    gates, bias_rows = {"LSTM": (4, 4), "GRU": (3, 4), "RNN": (1, 1)}[layer.type]
    size = g(1) // directions // hidden // gates
    blobs = [("weight_xc", size * hidden * gates * directions, TAGGED), ("bias_c", hidden * bias_rows * directions, TAGGED),
             ("weight_hc", outputs * hidden * gates * directions, TAGGED)]
    if layer.type == "LSTM" and outputs != hidden:
        blobs.append(("weight_hr", hidden * outputs * directions, TAGGED))
    return blobs


@dataclass
class Blob:
    label: str
    offset: int  # byte offset in the .bin
    size: int  # bytes, including the tag and padding
    kind: int  # TAGGED or RAW
    storage: str  # "fp32", "fp16", "int8", "fp32-table", "raw"
    values: np.ndarray  # decoded float32 (int8 kept as int8)
    raw: bytes = b""  # the bytes as stored, tag and padding included


def _read_blob(data: bytes, offset: int, label: str, count: int, kind: int) -> Blob:
    def need(n: int) -> None:
        if offset + n > len(data):
            raise NcnnFormatError(f"blob '{label}' ({count} values) runs past the end of the .bin")

    if kind == RAW:
        need(count * 4)
        return Blob(label, offset, count * 4, RAW, "raw", np.frombuffer(data, "<f4", count, offset).copy())
    need(4)
    tag = struct.unpack_from("<I", data, offset)[0]
    body = offset + 4
    if tag == TAG_FP16:
        size = _align4(count * 2)
        need(4 + size)
        return Blob(label, offset, 4 + size, kind, "fp16", np.frombuffer(data, "<f2", count, body).astype(np.float32))
    if tag == TAG_INT8:
        size = _align4(count)
        need(4 + size)
        return Blob(label, offset, 4 + size, kind, "int8", np.frombuffer(data, np.int8, count, body).copy())
    if tag == TAG_FP32_EXTRA or sum(data[offset : offset + 4]) == 0:
        need(4 + count * 4)
        return Blob(label, offset, 4 + count * 4, kind, "fp32", np.frombuffer(data, "<f4", count, body).copy())
    size = 256 * 4 + _align4(count)  # 256-entry lookup table then one index byte per value
    need(4 + size)
    table = np.frombuffer(data, "<f4", 256, body)
    index = np.frombuffer(data, np.uint8, count, body + 1024)
    return Blob(label, offset, 4 + size, kind, "fp32-table", table[index].astype(np.float32))


def split_weights(layers: list[Layer], data: bytes) -> dict[str, list[Blob]]:
    """The .bin cut into each layer's blobs; raises NcnnFormatError unless every byte is accounted for."""
    offset = 0
    found: dict[str, list[Blob]] = {}
    for layer in layers:
        blobs = []
        for label, count, kind in weight_layout(layer):
            blob = _read_blob(data, offset, label, count, kind)
            blob.raw = data[offset : offset + blob.size]
            offset += blob.size
            blobs.append(blob)
        found[layer.name] = blobs
    if offset != len(data):
        raise NcnnFormatError(f"the .bin has {len(data)} bytes but the layers' weights account for {offset}; "
                              "a layer type with weights unknown to edgekit is present")
    return found


def tagged_int8(values: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(values, dtype=np.int8).tobytes()
    return struct.pack("<I", TAG_INT8) + raw + b"\0" * (_align4(len(raw)) - len(raw))


def tagged_fp16(values: np.ndarray) -> bytes:
    """fp16 weights exactly as pnnx 20261020 ``fp16=1`` writes them (checked byte for byte in the tests): rounded
    half away from zero, and values below fp16's smallest normal (6.1e-5) flushed to zero, not kept subnormal."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4").astype(np.int64)
    sign = (bits >> 31) << 15
    exponent = (bits >> 23) & 0xFF
    significand = bits & 0x7FFFFF
    rebased = exponent - 112
    magnitude = (rebased << 10) + (significand >> 13) + ((significand & 0x1FFF) >= 0x1000)
    half = np.where(rebased <= 0, 0, np.minimum(magnitude, 0x7C00))
    half = np.where(exponent == 0xFF, 0x7C00 | np.where(significand != 0, 0x200, 0), half)
    raw = (sign | half).astype("<u2").tobytes()
    return struct.pack("<I", TAG_FP16) + raw + b"\0" * (_align4(len(raw)) - len(raw))


def raw_fp32(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()
