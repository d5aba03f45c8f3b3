"""The ONNX side of locating a divergence: the graph in topological order, its float tensors, the reference
values of any tensor (onnxruntime with the tensor added as a graph output), and which ONNX nodes an artifact
tensor stands for once a converter has fused several nodes into one op.

Nodes are named by :func:`node_id`: the node's name, or ``<Op:first output>`` for exporters that leave names
empty. Backends receive ``ConvertContext.float_layers`` in these names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit._lazy import require
from edgekit.calibration import SampleSet
from edgekit.errors import ToolError, tail

FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
#: ops whose weights make a layer worth keeping in float, and that a converter fuses activations into
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
                "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "PRelu", "Gather"}
#: reference values read per onnxruntime run; bigger sets are read in several runs
MAX_REFERENCE_BYTES = 192 << 20


def node_id(node: Any) -> str:
    """How edgekit names an ONNX node: its name, else its op and first output."""
    return node.name or f"<{node.op_type}:{node.output[0] if node.output else '?'}>"


@dataclass
class Group:
    """The ONNX nodes behind one artifact tensor: what a converter fused between mapped tensors."""

    tensor: str  # the ONNX tensor the artifact exposes
    nodes: list[int]  # node indices, topological order
    anchor: int  # the node the group is named after (its weighted op, else the tensor's producer)
    inputs: list[str] = field(default_factory=list)  # tensors the group reads from outside itself


class Graph:
    """An ONNX model's nodes in topological order, with producers, float tensors and parameter counts."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "core")
        self.model = model
        self.nodes = list(model.graph.node)
        self.ids = [node_id(n) for n in self.nodes]
        self.index = {name: i for i, name in enumerate(self.ids)}
        self.initializers = {init.name: int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer}
        self.graph_inputs = [i.name for i in model.graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in model.graph.output]
        self.producer: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # shape inference is a help, not a requirement
            inferred = model
        self.types: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
            tensor_type = value.type.tensor_type
            self.types[value.name] = tensor_type.elem_type
            dims = tensor_type.shape.dim if tensor_type.HasField("shape") else None
            self.shapes[value.name] = tuple(d.dim_value for d in dims) if dims is not None and all(d.HasField("dim_value") for d in dims) else None

    def op(self, index: int) -> str:
        return self.nodes[index].op_type

    def params(self, index: int) -> int:
        """Weights (initializer elements) the node reads."""
        return sum(self.initializers.get(name, 0) for name in self.nodes[index].input)

    @property
    def total_params(self) -> int:
        return sum(self.initializers.values())

    def float_tensors(self) -> list[str]:
        """Every node output that is (or may be) a float tensor, in topological order."""
        found = []
        for node in self.nodes:
            for out in node.output:
                if out and self.types.get(out, 1) in FLOAT_TYPES:
                    found.append(out)
        return found

    def group_for(self, tensor: str, mapped: set[str]) -> Group | None:
        """The nodes computing ``tensor`` from other mapped tensors, graph inputs and weights."""
        start = self.producer.get(tensor)
        if start is None:
            return None
        members, inputs, stack = {start}, [], [start]
        while stack:
            for name in self.nodes[stack.pop()].input:
                if not name or name in self.initializers:
                    continue
                parent = self.producer.get(name)
                if name in mapped or parent is None:
                    if name not in inputs:
                        inputs.append(name)
                elif parent not in members:
                    members.add(parent)
                    stack.append(parent)
        ordered = sorted(members)
        weighted = [i for i in ordered if self.op(i) in WEIGHTED_OPS and self.params(i) > 0]
        return Group(tensor, ordered, weighted[0] if weighted else start, inputs)


def with_outputs(model: Any, tensors: Iterable[str]) -> Any:
    """A copy of ``model`` whose graph also outputs ``tensors`` (typed where shape inference knew them)."""
    onnx = require("onnx", "core")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    known = {v.name: v for v in copy.graph.value_info}
    for name in tensors:
        if name in present:
            continue
        if name in known:
            copy.graph.output.append(known[name])
        else:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        present.add(name)
    return copy


def reference_values(model: Any, samples: SampleSet, tensors: list[str]) -> list[dict[str, np.ndarray]]:
    """onnxruntime's value of each tensor (any intermediate) on each sample, as float32."""
    from edgekit.reference import session_for

    session = session_for(with_outputs(model, tensors))
    wanted = [t for t in tensors if t in {o.name for o in session.get_outputs()}]
    inputs = [i.name for i in session.get_inputs()]
    results = []
    for index in range(samples.count):
        sample = samples.sample(index)
        try:
            values = session.run(wanted, {name: sample[name] for name in inputs if name in sample})
        except Exception as exc:  # onnxruntime's own exception types
            raise ToolError(f"onnxruntime failed to compute intermediate tensors on sample {index}: {tail(str(exc), 5)}") from None
        results.append({name: np.asarray(value) for name, value in zip(wanted, values, strict=True)
                        if np.asarray(value).dtype.kind == "f"})
    return results


def chunks(tensors: list[str], bytes_per_tensor: dict[str, int], budget: int = MAX_REFERENCE_BYTES) -> list[list[str]]:
    """Split ``tensors`` (kept in order) into runs of at most ``budget`` bytes each."""
    out: list[list[str]] = [[]]
    used = 0
    for name in tensors:
        size = bytes_per_tensor.get(name, 0)
        if out[-1] and used + size > budget:
            out.append([])
            used = 0
        out[-1].append(name)
        used += size
    return [c for c in out if c]
