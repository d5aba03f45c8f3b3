"""Which artifact tensor holds which ONNX tensor, found by value.

Converters rename everything (pnnx numbers ncnn blobs, onnx2tf names TFLite tensors after TensorFlow ops),
so names cannot be trusted. Values can: a float twin of the artifact (the same conversion at fp32, so the same
tensor names) runs on a few samples, and each of its tensors is matched to the ONNX tensor it reproduces within
the fp32 tolerance, allowing for the layouts converters use (a dropped batch dim, channels last). Where no
tensor matches (a converter fused the node away) the ONNX tensor is left unmapped and the report says so;
tensors that are constant or tiny on the samples are never matched, because a match there could be chance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: a twin tensor matches an ONNX tensor when it reproduces it at least this well (the fp32 tolerance)
MATCH_SQNR_DB = 40.0
#: tensors with fewer values are not matched by value (a small tensor can match by chance)
MIN_ELEMENTS = 8


@dataclass(frozen=True)
class Match:
    artifact: str  # the artifact's tensor name
    perm: tuple[int, ...] | None  # ONNX layout -> artifact layout (channels last), None: same order
    twin_sqnr_db: float  # how well the float twin reproduced the ONNX tensor on the mapping samples


@dataclass
class TensorMap:
    """ONNX tensor -> artifact tensor, and why the others are not mapped."""

    matches: dict[str, Match] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)
    method: str = "content"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "unmapped": self.unmapped,
                "matches": {k: {**asdict(m), "perm": list(m.perm) if m.perm else None} for k, m in self.matches.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorMap:
        matches = {k: Match(m["artifact"], tuple(m["perm"]) if m.get("perm") else None, float(m["twin_sqnr_db"]))
                   for k, m in data.get("matches", {}).items()}
        return cls(matches, dict(data.get("unmapped", {})), data.get("method", "content"))

    def artifact_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for match in self.matches.values():
            seen.setdefault(match.artifact)
        return list(seen)


def channels_last(rank: int) -> tuple[int, ...] | None:
    return (0, *range(2, rank), 1) if rank >= 3 else None


def to_onnx_layout(array: np.ndarray, onnx_shape: tuple[int, ...], perm: tuple[int, ...] | None) -> np.ndarray:
    """An artifact tensor's values in the ONNX tensor's shape (undoing a dropped batch dim and channels last)."""
    if perm is None:
        return array.reshape(onnx_shape)
    return array.reshape([onnx_shape[i] for i in perm]).transpose(np.argsort(perm))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(candidate.astype(np.float64) - reference, dtype=np.float64)))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _layouts(artifact_shape: tuple[int, ...], onnx_shape: tuple[int, ...]) -> list[tuple[int, ...] | None]:
    """Layouts under which an artifact tensor can hold an ONNX tensor (dims of 1 aside); when both fit the
    shape (C == H == W), both are tried and the values decide."""
    def squeezed(dims: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(d for d in dims if d != 1)

    found: list[tuple[int, ...] | None] = []
    target = squeezed(artifact_shape)
    if target == squeezed(onnx_shape):
        found.append(None)
    perm = channels_last(len(onnx_shape))
    reorders = perm is not None and onnx_shape[1] != 1 and any(d != 1 for d in onnx_shape[2:])
    if perm is not None and reorders and target == squeezed(tuple(onnx_shape[i] for i in perm)):
        found.append(perm)
    return found


def match_tensors(reference: list[dict[str, np.ndarray]], twin: list[dict[str, np.ndarray]], order: list[str],
                  pinned: dict[str, Match] | None = None) -> TensorMap:
    """Match every ONNX tensor of ``reference`` (per sample) to the twin tensor (``order``: the artifact's
    execution order) that reproduces it best, if one does within :data:`MATCH_SQNR_DB`. ``pinned`` maps
    tensors known by construction (the graph's inputs and outputs)."""
    result = TensorMap(matches=dict(pinned or {}))
    candidates: dict[int, list[tuple[str, float]]] = {}
    for name, first in reference[0].items():
        if name in result.matches:
            continue
        values = [sample[name] for sample in reference]
        if not all(np.isfinite(v).all() for v in values):
            result.unmapped[name] = "onnxruntime gives NaN/Inf on the mapping samples"
        elif first.size < MIN_ELEMENTS:
            result.unmapped[name] = f"fewer than {MIN_ELEMENTS} values: too small to match by value"
        elif all(np.ptp(v) == 0 for v in values):
            result.unmapped[name] = "constant on the mapping samples: cannot be matched by value"
        else:
            norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in values))
            candidates.setdefault(first.size, []).append((name, norm))
    best: dict[str, tuple[float, int, Match]] = {}
    for position, artifact_name in enumerate(order):
        values = [sample.get(artifact_name) for sample in twin]
        if any(v is None for v in values) or not all(np.isfinite(v).all() for v in values):
            continue
        norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in values))
        for onnx_name, onnx_norm in candidates.get(values[0].size, []):
            if abs(norm - onnx_norm) > 0.02 * max(onnx_norm, 1e-30):  # same values have the same norm in any layout
                continue
            onnx_shape = reference[0][onnx_name].shape
            for perm in _layouts(values[0].shape, onnx_shape):
                joined = np.concatenate([to_onnx_layout(v, onnx_shape, perm).ravel() for v in values])
                expected = np.concatenate([sample[onnx_name].ravel() for sample in reference])
                score = sqnr_db(expected, joined)
                if score >= MATCH_SQNR_DB and (onnx_name not in best or score > best[onnx_name][0] + 0.1):
                    best[onnx_name] = (score, position, Match(artifact_name, perm, round(min(score, 999.0), 2)))
    for sizes in candidates.values():
        for onnx_name, _ in sizes:
            if onnx_name in best:
                result.matches[onnx_name] = best[onnx_name][2]
            else:
                result.unmapped[onnx_name] = "no tensor of the artifact holds these values (fused into another op, or computed in another form)"
    return result


@dataclass(frozen=True)
class ArtifactOp:
    """One op (ncnn layer, TFLite operator) of an artifact: what it reads and writes, by tensor name."""

    name: str
    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def ops_between(ops: list[ArtifactOp], tensor: str, stops: set[str]) -> list[ArtifactOp]:
    """The ops computing ``tensor`` from the ``stops`` (other mapped tensors, graph inputs): the artifact side of a
    group of fused ONNX nodes. A head whose logits are too small to match by value is in its Softmax's group."""
    writer = {out: op for op in ops for out in op.outputs}
    start = writer.get(tensor)
    if start is None:
        return []
    found, stack = {start.name: start}, [start]
    while stack:
        for name in stack.pop().inputs:
            op = writer.get(name)
            if name not in stops and op is not None and op.name not in found:
                found[op.name] = op
                stack.append(op)
    return [op for op in ops if op.name in found]
