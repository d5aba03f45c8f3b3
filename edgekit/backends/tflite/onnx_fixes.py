"""ONNX rewrites onnx2tf needs, exact by construction.

Every precision: ``Gather(Concat(x0, x1, ...), i)`` over the concatenated axis, each ``xk`` one element thick
there, is ``Squeeze(xi)``. PyTorch writes this for ``hidden[-1]`` of a multi-layer LSTM/GRU (the layers' final
states concatenated, the last one taken: the zoo's Resemblyzer speaker encoder), and onnx2tf returns the whole
stack instead ((3, 256) for (1, 256)).

int8:

onnx2tf lowers a padded or ``ceil_mode`` MaxPool to ``PADV2(-FLT_MAX)`` + ``MAX_POOL_2D``. In an int8 model the pad's
output then has a quantization scale of about 1e36 (the calibrator saw -3.4e38), and XNNPACK refuses the whole model
("failed to prepare"): the zoo's MTCNN nets (ceil_mode pools) and ResNet-50 (a padded pool). Replicating the edge
instead (``Slice`` + ``Concat``) gives the same maximum, because every window holds a real element and the edge
element of the side it overhangs, and keeps the padded tensor in the data's range.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _static_dims(model: Any) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shape = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        if shape and all(shape):
            dims[value.name] = shape
    return dims


def _plan(node: Any, dims: dict[str, list[int]]) -> list[tuple[int, int, int]] | None:
    """Per spatial axis (axis, edges before, edges after) that turn ``node`` into an unpadded floor-mode MaxPool of
    the same output, or None when the pool is not one this rewrite handles exactly."""
    shape, out = dims.get(node.input[0]), dims.get(node.output[0])
    kernel = list(_attr(node, "kernel_shape", []))
    if shape is None or out is None or len(shape) != 4 or len(kernel) != 2 or len(node.output) != 1:
        return None
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET" or any(d != 1 for d in _attr(node, "dilations", [1, 1])):
        return None
    pads, strides = list(_attr(node, "pads", [0, 0, 0, 0])), list(_attr(node, "strides", [1, 1]))
    if not any(pads) and not _attr(node, "ceil_mode", 0):
        return None
    plan = []
    for i in range(2):
        size, k, s, before = shape[2 + i], kernel[i], strides[i], pads[i]
        after = (out[2 + i] - 1) * s + k - size - before  # what floor mode needs to give the same number of windows
        last_start = (out[2 + i] - 1) * s - before
        if after < 0 or before > k - 1 or last_start > size - 1:
            return None  # a window without a real element, or input the pool never reads: not exact as edges
        plan.append((2 + i, before, after))
    return plan


def _edges(name: str, axis: int, before: int, after: int, counter: list[int]) -> tuple[list[Any], list[Any], str]:
    from onnx import helper, numpy_helper

    if not before and not after:
        return [], [], name
    counter[0] += 1
    tag = f"edgekit_edge_{counter[0]}"
    inits = [numpy_helper.from_array(np.array(v, np.int64), f"{tag}_{k}") for k, v in
             (("first_start", [0]), ("first_end", [1]), ("last_start", [-1]), ("last_end", [np.iinfo(np.int64).max]), ("axis", [axis]))]
    nodes, parts = [], []
    if before:
        nodes.append(helper.make_node("Slice", [name, f"{tag}_first_start", f"{tag}_first_end", f"{tag}_axis"], [f"{tag}_first"]))
        parts += [f"{tag}_first"] * before
    parts.append(name)
    if after:
        nodes.append(helper.make_node("Slice", [name, f"{tag}_last_start", f"{tag}_last_end", f"{tag}_axis"], [f"{tag}_last"]))
        parts += [f"{tag}_last"] * after
    nodes.append(helper.make_node("Concat", parts, [f"{tag}_out"], axis=axis))
    return nodes, inits, f"{tag}_out"


def max_pool_edges(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose padded/ceil-mode MaxPools read edge-replicated input instead; the nodes changed."""
    import onnx

    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    if not pools:
        return model, []
    dims = _static_dims(model)
    plans = {id(n): p for n in pools if (p := _plan(n, dims)) is not None}
    if not plans:
        return model, []
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes, counter, changed = [], [0], []
    for original, node in zip(model.graph.node, copy.graph.node, strict=True):
        plan = plans.get(id(original))
        if plan is not None:
            source = node.input[0]
            for axis, before, after in plan:
                added, inits, source = _edges(source, axis, before, after, counter)
                nodes += added
                copy.graph.initializer.extend(inits)
            node.input[0] = source
            for attr in list(node.attribute):
                if attr.name in ("pads", "ceil_mode"):
                    node.attribute.remove(attr)
            changed.append(node.name or node.output[0])
        nodes.append(node)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.ir_version = max(int(copy.ir_version), 4)  # the new constants are initializers, not graph inputs
    return copy, changed


def _constant_scalars(model: Any) -> dict[str, int]:
    """Integer scalars the graph fixes (initializers or Constant nodes), by tensor name."""
    from onnx import numpy_helper

    from edgekit.modelio import constant_tensors

    return {name: int(numpy_helper.to_array(tensor)) for name, tensor in constant_tensors(model).items()
            if len(tensor.dims) == 0 and tensor.data_type in (6, 7)}  # INT32, INT64


def gathers_from_concats(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` where ``Gather(Concat(...), constant i)`` over the concatenated axis, with every
    concatenated input one element thick on it, reads input ``i`` directly (a Squeeze); the Gathers changed."""
    import onnx
    from onnx import helper, numpy_helper

    producers = {out: node for node in model.graph.node for out in node.output}
    scalars = _constant_scalars(model)
    dims: dict[str, list[int]] | None = None
    plans: dict[str, str] = {}
    for node in model.graph.node:
        concat = producers.get(node.input[0]) if node.op_type == "Gather" else None
        if concat is None or concat.op_type != "Concat" or len(node.input) < 2 or node.input[1] not in scalars:
            continue
        dims = _static_dims(model) if dims is None else dims
        shapes = [dims.get(name) for name in concat.input]
        if any(shape is None for shape in shapes):
            continue
        rank = len(shapes[0])
        axis, concat_axis = _attr(node, "axis", 0) % rank, _attr(concat, "axis", 0) % rank
        count = len(concat.input)
        index = scalars[node.input[1]]
        if axis != concat_axis or not -count <= index < count or any(shape[axis] != 1 for shape in shapes):
            continue
        plans[node.output[0]] = concat.input[index % count]
    if not plans:
        return model, []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes, changed = [], []
    for node in copy.graph.node:
        source = plans.get(node.output[0]) if node.op_type == "Gather" else None
        if source is None:
            nodes.append(node)
            continue
        axis = _attr(node, "axis", 0) % len(dims[source])
        name = node.name or node.output[0]
        if opset >= 13:
            axes = f"{node.output[0]}_edgekit_axes"
            copy.graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
            nodes.append(helper.make_node("Squeeze", [source, axes], [node.output[0]], name=name))
        else:
            nodes.append(helper.make_node("Squeeze", [source], [node.output[0]], name=name, axes=[axis]))
        changed.append(name)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.ir_version = max(int(copy.ir_version), 4)
    return copy, changed
