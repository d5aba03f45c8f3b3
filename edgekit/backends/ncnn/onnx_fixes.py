"""ONNX rewrites pnnx needs for recurrent layers, exact by construction.

pnnx (20261020) turns an ONNX LSTM/GRU/RNN into ncnn's recurrent layer with its weights only in the shape
PyTorch exports it: ``Y`` read through ``Squeeze(axis=1)`` (or Transpose+Reshape when bidirectional), no initial
state inputs, no ``Y_h``/``Y_c`` consumers. Otherwise it writes the weights as MemoryData blobs that ncnn's layer
cannot load ("layer load_param LSTM failed": the zoo's Resemblyzer and ddddocr recognizer). So, before pnnx:

* all-zero constant initial states are dropped (ONNX's default initial state is zero);
* outputs nothing reads are dropped;
* a forward ``Y_h`` that is read is recomputed from ``Y``: ``Unsqueeze(Gather(Squeeze(Y, 1), -1), 0)`` is the last
  step's hidden state, bit for bit, when the node has no ``sequence_lens``;
* a bidirectional ``Y -> Transpose -> Reshape`` gets back the 3-D Reshape that onnxsim merged away.

onnx2tf needs the opposite (its LSTM wants the state inputs), so only the ncnn route rewrites.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RECURRENT = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}  # input indices of initial_h (and initial_c)


def _direction(node: Any) -> str:
    return next((a.s.decode() for a in node.attribute if a.name == "direction"), "forward")


class _Rewrite:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.changed: list[str] = []

    def readers(self, name: str) -> list[Any]:
        return [n for n in self.graph.node if name in n.input]

    def used(self, name: str) -> bool:
        return bool(name) and (bool(self.readers(name)) or name in {o.name for o in self.graph.output})

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self.constants:
            self.constants[name] = value
            self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def drop_zero_states(self, node: Any) -> bool:
        zero = [k for k in RECURRENT[node.op_type] if len(node.input) > k and node.input[k] in self.constants
                and not np.any(self.constants[node.input[k]])]
        inputs = ["" if k in zero else name for k, name in enumerate(node.input)]
        while inputs and not inputs[-1]:
            inputs.pop()
        if inputs == list(node.input):
            return False
        node.input[:] = inputs
        return True

    def hidden_from_y(self, node: Any, position: int) -> bool:
        """Y_h read by others: recompute it from Y (forward, no sequence_lens), through a Squeeze(axis=1) of Y."""
        from onnx import helper

        y_h = node.output[1] if len(node.output) > 1 else ""
        if not self.used(y_h) or _direction(node) != "forward" or (len(node.input) > 4 and node.input[4]):
            return False
        y = node.output[0] or f"{y_h}_Y"
        if not node.output[0]:
            node.output[0] = y
        squeeze = next((n for n in self.readers(y) if n.op_type == "Squeeze" and len(n.input) > 1
                        and self.constants.get(n.input[1]) is not None and list(self.constants[n.input[1]]) == [1]), None)
        added = []
        if squeeze is None:
            squeeze = helper.make_node("Squeeze", [y, self.constant("edgekit_axis_1", np.array([1], np.int64))], [f"{y}_squeezed"])
            added.append(squeeze)
        added += [helper.make_node("Gather", [squeeze.output[0], self.constant("edgekit_last_step", np.array(-1, np.int64))], [f"{y_h}_last"], axis=0),
                  helper.make_node("Unsqueeze", [f"{y_h}_last", self.constant("edgekit_axis_0", np.array([0], np.int64))], [y_h])]
        node.output[1] = ""
        if squeeze not in added:  # the reused Squeeze may come later: the new nodes go right after it
            position = list(self.graph.node).index(squeeze)
        for offset, new in enumerate(added):
            self.graph.node.insert(position + 1 + offset, new)
        return True

    def bidirectional_3d(self, node: Any) -> bool:
        """Bidirectional Y -> Transpose(0, 2, 1, 3) -> Reshape(S): pnnx wants the Reshape to [seq, batch, 2*hidden]
        that PyTorch exports (onnxsim merges it into the next one). Put it back: Reshape([0, 0, -1]) then S."""
        from onnx import helper

        if _direction(node) != "bidirectional" or not node.output[0]:
            return False
        transpose = next(iter(self.readers(node.output[0])), None)
        if transpose is None or transpose.op_type != "Transpose" or [list(a.ints) for a in transpose.attribute if a.name == "perm"] != [[0, 2, 1, 3]]:
            return False
        reshape = next(iter(self.readers(transpose.output[0])), None)
        target = self.constants.get(reshape.input[1]) if reshape is not None and reshape.op_type == "Reshape" else None
        if target is None or (target.size == 3 and list(target[:2]) == [0, 0]) or np.any(target[2:] == 0):
            return False  # already 3-D, or a 0 past axis 1 copies a dim the extra Reshape would change
        middle = f"{transpose.output[0]}_seq_batch_features"
        self.graph.node.insert(list(self.graph.node).index(reshape),
                               helper.make_node("Reshape", [transpose.output[0], self.constant("edgekit_seq_batch_features", np.array([0, 0, -1], np.int64))], [middle]))
        reshape.input[0] = middle
        return True

    def trim_outputs(self, node: Any) -> bool:
        outputs = [name if self.used(name) or k == 0 else "" for k, name in enumerate(node.output)]
        while len(outputs) > 1 and not outputs[-1]:
            outputs.pop()
        if outputs == list(node.output):
            return False
        del node.output[:]
        node.output.extend(outputs)
        return True


def pnnx_ready_recurrent(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` with its recurrent nodes in the form pnnx converts (see the module docstring), and the
    nodes changed; ``model`` itself when none needs it."""
    import onnx

    if not any(n.op_type in RECURRENT for n in model.graph.node):
        return model, []
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rewrite = _Rewrite(copy)
    for node in [n for n in copy.graph.node if n.op_type in RECURRENT]:
        position = list(copy.graph.node).index(node)
        changes = [rewrite.drop_zero_states(node), rewrite.hidden_from_y(node, position), rewrite.trim_outputs(node),
                   rewrite.bidirectional_3d(node)]
        if any(changes):
            rewrite.changed.append(node.name or node.op_type)
    if not rewrite.changed:
        return model, []
    used = {name for n in copy.graph.node for name in n.input} | {o.name for o in copy.graph.output}
    kept = [t for t in copy.graph.initializer if t.name in used]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    del copy.graph.value_info[:]
    return copy, rewrite.changed
