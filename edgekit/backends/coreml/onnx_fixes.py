"""ONNX rewrites the Core ML route needs, exact by construction.

coremltools' ``prelu`` takes rank-3 to rank-5 inputs only ("prelu op: rank 3 or rank 5 input is only supported"):
a per-channel PReLU after a fully connected layer (rank 2, the zoo's MTCNN R-Net and O-Net) stops the conversion.
``PReLU(x, slope) = Relu(x) - slope * Relu(-x)`` computes the same for every x (one side of each is zero) with ops
every route converts.

onnx2torch has no converter for old-opset ``Dropout``, and the one it has for newer opsets hands the next layer a
tuple element of the wrong rank (AlexNet's classifier): an inference Dropout is the identity, so it becomes one.
"""

from __future__ import annotations

from typing import Any

#: input ranks coremltools' prelu converts
PRELU_RANKS = (3, 4, 5)


def _ranks(model: Any) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
            if v.type.tensor_type.HasField("shape")}


def prelu_as_relus(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose PReLUs on inputs of ranks coremltools cannot take are Relu/Neg/Mul/Sub, and the
    rewritten nodes' names; ``model`` itself when there are none."""
    import onnx
    from onnx import helper

    ranks = _ranks(model)
    targets = [n for n in model.graph.node if n.op_type == "PRelu" and ranks.get(n.input[0], 4) not in PRELU_RANKS]
    if not targets:
        return model, []
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    nodes = []
    for index, node in enumerate(fixed.graph.node):
        if node.op_type != "PRelu" or ranks.get(node.input[0], 4) in PRELU_RANKS:
            nodes.append(node)
            continue
        x, slope, y = node.input[0], node.input[1], node.output[0]
        base = f"{node.name or 'PRelu'}_{index}_coreml"
        nodes += [helper.make_node("Relu", [x], [f"{base}_pos"], name=f"{base}_relu"),
                  helper.make_node("Neg", [x], [f"{base}_neg"], name=f"{base}_neg"),
                  helper.make_node("Relu", [f"{base}_neg"], [f"{base}_negrelu"], name=f"{base}_negrelu"),
                  helper.make_node("Mul", [slope, f"{base}_negrelu"], [f"{base}_scaled"], name=f"{base}_mul"),
                  helper.make_node("Sub", [f"{base}_pos", f"{base}_scaled"], [y], name=node.name or f"{base}_sub")]
    del fixed.graph.node[:]
    fixed.graph.node.extend(nodes)
    return fixed, [n.name or "<unnamed>" for n in targets]


def dropout_as_identity(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose inference Dropouts (no training_mode input, mask unused) are Identity nodes, and
    their names; ``model`` itself when there are none."""
    import onnx

    positions = inference_dropouts(model)
    if not positions:
        return model, []
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for position in positions:
        node = fixed.graph.node[position]
        node.op_type = "Identity"
        del node.input[1:]
        del node.output[1:]
        del node.attribute[:]
    return fixed, [model.graph.node[p].name or "<unnamed>" for p in positions]


def inference_dropouts(model: Any) -> list[int]:
    """Positions of the Dropouts that compute the identity here: no training_mode input, mask unused."""
    consumed = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}

    def mask_used(node: Any) -> bool:
        return len(node.output) > 1 and bool(node.output[1]) and node.output[1] in consumed

    return [i for i, node in enumerate(model.graph.node)
            if node.op_type == "Dropout" and len([n for n in node.input if n]) <= 2 and not mask_used(node)]
