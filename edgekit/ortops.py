"""onnxruntime-only ops: refuse them before conversion, or rewrite them back to float on request.

``onnxruntime.quantization.quantize_dynamic`` writes ConvInteger, MatMulInteger and DynamicQuantizeLinear
(standard ONNX, but no converter takes them) and ``com.microsoft`` ops such as DynamicQuantizeLSTM that only
onnxruntime runs. ddddocr's default recognizer (``common_old.onnx``) is such a model. Without ``--dequantize``
the load stage refuses the model naming each op and its nodes. With it, each quantized op goes back to its
float op with the dequantized weights ``(w - zero_point) * scale`` (activations are no longer quantized), the
quantization plumbing left unused is removed, and the pipeline checks the float model against onnxruntime
running the original (the report's ``dequantized`` key says how close). Ops it cannot rewrite stay refused.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import ModelError

#: standard ops that only onnxruntime executes (integer kernels with run-time activation quantization)
ORT_ONLY_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
REWRITTEN = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "com.microsoft::DynamicQuantizeLSTM")
_FLOAT = 1  # TensorProto.FLOAT


def _label(node: Any) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def _is_ort_only(node: Any) -> bool:
    return node.op_type in ORT_ONLY_OPS and node.domain in ("", "ai.onnx") or node.domain.startswith("com.microsoft")


def ort_only_nodes(model: Any) -> dict[str, list[str]]:
    """op label -> node names, for every node only onnxruntime can run (subgraphs included)."""
    from edgekit.names import _graphs

    found: dict[str, list[str]] = defaultdict(list)
    for graph in _graphs(model.graph):
        for node in graph.node:
            if _is_ort_only(node):
                found[_label(node)].append(node.name or "<unnamed>")
    return dict(found)


def rewritable(model: Any) -> bool:
    """Whether --dequantize can take every onnxruntime-only op in ``model``."""
    return all(op in REWRITTEN for op in ort_only_nodes(model))


def _listing(found: dict[str, list[str]]) -> str:
    return "\n  ".join(f"{op} ({len(names)} node{'s' if len(names) > 1 else ''}: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
                       for op, names in found.items())


def refuse(model: Any, path: Any) -> None:
    """Raise ModelError naming the onnxruntime-only ops and nodes of ``model``, if it has any."""
    found = ort_only_nodes(model)
    if not found:
        return
    fixable = [op for op in found if op in REWRITTEN]
    stuck = [op for op in found if op not in REWRITTEN]
    hint = ("pass --dequantize to rewrite them back to float ops with the dequantized weights (checked against onnxruntime), "
            "or export the float model instead of the onnxruntime-quantized one")
    if stuck:
        hint = (f"edgekit cannot rewrite {', '.join(stuck)}; export the model without onnxruntime-specific ops "
                "(e.g. without onnxruntime's graph optimizations or quantization)")
    raise ModelError(f"{path}: the model uses ops that only onnxruntime runs; no converter takes them:\n  {_listing(found)}",
                     hint=hint if not (fixable and stuck) else hint + f" ({', '.join(fixable)} could be rewritten with --dequantize)")


@dataclass
class _Graph:
    """Index of one graph for the rewrite: producers, consumers, initializers as arrays."""

    graph: Any
    producer: dict[str, Any] = field(default_factory=dict)
    consumers: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    initializers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Any) -> _Graph:
        index = cls(graph)
        for node in graph.node:
            for name in node.output:
                index.producer[name] = node
            for name in node.input:
                if name:
                    index.consumers[name].append(node)
        index.initializers = {t.name: t for t in graph.initializer}
        return index

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        tensor = self.initializers.get(name)
        return numpy_helper.to_array(tensor) if tensor is not None else None

    def only_consumer(self, name: str) -> Any | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None


class _Unmatched(Exception):
    pass


def _input(node: Any, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _bias(g: _Graph, add: Any, integer_output: str) -> np.ndarray:
    """The float bias that the quantizer folded into an int32 Add: Reshape(Cast(Floor(Div(bias, scales))))."""
    other = next(name for name in add.input if name != integer_output)
    node = g.producer.get(other)
    chain = []
    while node is not None and node.op_type in ("Reshape", "Cast", "Floor", "Div"):
        chain.append(node.op_type)
        if node.op_type == "Div":
            bias = g.array(node.input[0])
            if bias is None:
                break
            return bias.astype(np.float32)
        node = g.producer.get(node.input[0])
    raise _Unmatched(f"bias Add '{add.name}' is not fed by the quantizer's Div/Floor/Cast/Reshape chain ({' <- '.join(chain) or 'nothing'})")


def _weight_scale(g: _Graph, mul: Any, chain_output: str, activation_scale: str) -> np.ndarray:
    """s_w from ``Mul(chain, Mul(s_x, s_w))``, the quantizer's rescaling of the integer result."""
    other = next((name for name in mul.input if name != chain_output), None)
    scales = g.producer.get(other or "")
    if scales is None or scales.op_type != "Mul" or activation_scale not in scales.input:
        raise _Unmatched(f"'{mul.name}' does not rescale by Mul(activation scale, weight scale)")
    weight_scale = g.array(next(name for name in scales.input if name != activation_scale))
    if weight_scale is None:
        raise _Unmatched(f"the weight scale of '{mul.name}' is not a constant")
    return weight_scale.astype(np.float32)


def _integer_op(g: _Graph, node: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """ConvInteger/MatMulInteger with its DynamicQuantizeLinear input and its int32 -> float tail, as float nodes.
    Returns (nodes to remove, new nodes, new initializers)."""
    from onnx import helper, numpy_helper

    quantize = g.producer.get(node.input[0])
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear" or _input(node, 2) not in ("", quantize.output[2]):
        raise _Unmatched(f"input 0 of '{node.name}' does not come from a DynamicQuantizeLinear")
    weights, zero = g.array(node.input[1]), g.array(_input(node, 3)) if _input(node, 3) else np.zeros((), np.float32)
    if weights is None or zero is None:
        raise _Unmatched(f"the weights of '{node.name}' are not constants")
    removed, bias, current = [node], None, node.output[0]
    while True:
        user = g.only_consumer(current)
        if user is None:
            raise _Unmatched(f"'{current}' has {len(g.consumers.get(current, []))} consumers; expected the quantizer's rescaling")
        removed.append(user)
        if user.op_type == "Add" and bias is None:
            bias = _bias(g, user, current)
        elif user.op_type == "Cast" and next(a.i for a in user.attribute if a.name == "to") == _FLOAT:
            pass
        elif user.op_type == "Mul":
            scale = _weight_scale(g, user, current, quantize.output[1])
            break
        else:
            raise _Unmatched(f"unexpected {user.op_type} '{user.name}' after '{node.name}'")
        current = user.output[0]
    conv = node.op_type == "ConvInteger"
    zero = zero.astype(np.float32).reshape(-1, *([1] * (weights.ndim - 1))) if conv and zero.size > 1 else zero.astype(np.float32)
    scale = scale.reshape(-1, *([1] * (weights.ndim - 1))) if conv and scale.size > 1 else scale
    dequantized = ((weights.astype(np.float32) - zero) * scale).astype(np.float32)
    w_name, out = f"{node.output[0]}_dequantized_w", removed[-1].output[0]
    initializers = [numpy_helper.from_array(dequantized, w_name)]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if conv:
        inputs = [quantize.input[0], w_name]
        if bias is not None:
            initializers.append(numpy_helper.from_array(bias, f"{node.output[0]}_dequantized_b"))
            inputs.append(initializers[-1].name)
        return removed, [helper.make_node("Conv", inputs, [out], name=node.name or None, **attributes)], initializers
    if bias is None:
        return removed, [helper.make_node("MatMul", [quantize.input[0], w_name], [out], name=node.name or None)], initializers
    initializers.append(numpy_helper.from_array(bias, f"{node.output[0]}_dequantized_b"))
    product = f"{node.output[0]}_dequantized_mm"
    return removed, [helper.make_node("MatMul", [quantize.input[0], w_name], [product], name=node.name or None),
                     helper.make_node("Add", [product, initializers[-1].name], [out], name=f"{node.name}_bias")], initializers


def _lstm(g: _Graph, node: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """com.microsoft DynamicQuantizeLSTM -> LSTM with W, R dequantized and put back in ONNX's [dirs, 4*hidden, in] layout."""
    from onnx import helper, numpy_helper

    def dequantized(w: int, s: int, z: int) -> np.ndarray:
        weights, scale, zero = g.array(_input(node, w)), g.array(_input(node, s)), g.array(_input(node, z))
        if weights is None or scale is None:
            raise _Unmatched(f"the weights of '{node.name}' are not constants")
        zero = np.zeros_like(scale) if zero is None else zero
        shape = (-1, 1, 1) if scale.ndim == 1 else (scale.shape[0], 1, scale.shape[-1])
        values = (weights.astype(np.float32) - zero.astype(np.float32).reshape(shape)) * scale.astype(np.float32).reshape(shape)
        return values.transpose(0, 2, 1).astype(np.float32)

    w_name, r_name = f"{node.output[0] or node.name}_dequantized_W", f"{node.output[0] or node.name}_dequantized_R"
    initializers = [numpy_helper.from_array(dequantized(1, 8, 9), w_name), numpy_helper.from_array(dequantized(2, 10, 11), r_name)]
    inputs = [node.input[0], w_name, r_name, *(_input(node, k) for k in range(3, 8))]
    while inputs and not inputs[-1]:
        inputs.pop()
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return [node], [helper.make_node("LSTM", inputs, list(node.output), name=node.name or None, **attributes)], initializers


def _prune(graph: Any) -> None:
    """Drop nodes nothing uses any more (the quantizer's scale plumbing), then unused initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(name in used for name in node.output if name)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def dequantize(model: Any) -> tuple[Any, dict[str, int]]:
    """A float copy of ``model``: the rewritable onnxruntime-only ops replaced; returns it and {op: count}.
    Raises ModelError naming the nodes it could not rewrite."""
    import onnx

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    g = _Graph.of(graph)
    done: Counter = Counter()
    problems: list[str] = []
    replacements: dict[int, list[Any]] = {}
    removed: set[int] = set()
    for node in list(graph.node):
        try:
            if node.op_type in ("ConvInteger", "MatMulInteger") and node.domain in ("", "ai.onnx"):
                gone, new, inits = _integer_op(g, node)
            elif node.op_type == "DynamicQuantizeLSTM" and node.domain == "com.microsoft":
                gone, new, inits = _lstm(g, node)
            else:
                continue
        except _Unmatched as exc:
            problems.append(f"{_label(node)} '{node.name}': {exc}")
            continue
        done[_label(node)] += 1
        removed.update(id(n) for n in gone)
        replacements[id(gone[-1])] = new
        graph.initializer.extend(inits)
    if problems:
        raise ModelError("--dequantize: these nodes do not have the layout onnxruntime's quantizer writes, so edgekit cannot rewrite them:\n  "
                         + "\n  ".join(problems[:8]), hint="export the float model instead of the onnxruntime-quantized one")
    nodes = [n for node in graph.node for n in (replacements.get(id(node), []) if id(node) in removed else [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)
    done["DynamicQuantizeLinear"] += sum(1 for n in model.graph.node if n.op_type == "DynamicQuantizeLinear") - sum(
        1 for n in graph.node if n.op_type == "DynamicQuantizeLinear")
    left = ort_only_nodes(rewritten)
    if left:
        raise ModelError(f"--dequantize: these onnxruntime-only ops are still in the model after the rewrite:\n  {_listing(left)}",
                         hint="export the float model instead of the onnxruntime-quantized one")
    used_domains = {n.domain for n in graph.node} | {""}
    kept = [o for o in rewritten.opset_import if o.domain in used_domains or o.domain == "ai.onnx"]
    del rewritten.opset_import[:]
    rewritten.opset_import.extend(kept)
    del graph.value_info[:]
    return rewritten, {op: count for op, count in done.items() if count}
