"""Per-layer fallback for Core ML int8 (weights): ONNX nodes -> the ML Program's weight constants, matched by
value, so that an ``OptimizationConfig`` can leave them uncompressed (``op_name_configs = {name: None}``).

Names cannot be trusted across ONNX -> PyTorch -> MIL, values can: a constant holds an ONNX initializer when it
has the same number of elements and the same values once both are sorted (sorting forgives transposed
weights), within fp16 rounding. A weight coremltools rewrote (a BatchNorm folded into a convolution) matches
nothing, and the node is reported as not mapped rather than guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.debug.graph import node_id

MIN_WEIGHT_ELEMENTS = 2


def weight_constants(program: Any, model: Any, nodes: frozenset[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(const op name -> ONNX node, ONNX node -> how it is kept float, nodes with no matching constant)."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    consts: dict[int, list[tuple[str, np.ndarray]]] = {}
    for op in program.functions["main"].operations:
        value = getattr(getattr(op, "val", None), "val", None) if op.op_type == "const" else None
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size >= MIN_WEIGHT_ELEMENTS:
            consts.setdefault(value.size, []).append((op.name, np.sort(value.astype(np.float32).ravel())))
    found: dict[str, str] = {}
    applied: dict[str, str] = {}
    for node in model.graph.node:
        name = node_id(node)
        if name not in nodes:
            continue
        for tensor in (t for t in node.input if t in initializers):
            weight = np.sort(numpy_helper.to_array(initializers[tensor]).astype(np.float32).ravel())
            same = [const_name for const_name, values in consts.get(weight.size, [])
                    if np.allclose(weight, values, rtol=1e-3, atol=1e-3 * float(np.abs(weight).max(initial=0.0)))]
            if len(same) == 1:  # several constants with these values (equal biases): which one is this node's is a guess
                found[same[0]] = name
    for const_name, name in found.items():
        applied[name] = (applied[name] + f", {const_name}") if name in applied else f"weights kept float: Core ML constant(s) {const_name}"
    return found, applied, sorted(nodes - set(applied))
