"""Names every converter accepts: node and tensor names rewritten to ``[A-Za-z][A-Za-z0-9_]*``.

Exporters write names that converters reject: paddle2onnx names nodes ``Conv@0`` (onnx2tf then fails inside
TensorFlow with "'Conv@0' is not a valid scope name"), PyTorch writes ``/conv1/Conv`` and ``onnx::Conv_12``,
TensorFlow exports keep ``:0``, old exporters leave node names empty or start tensor names with a digit.
The pipeline hands each backend a copy of the model whose names are valid, unique, non-empty and stable
(a valid name is kept; an invalid one always becomes the same new name), and maps the artifact's I/O back
to the user's names with :meth:`NameMap.restore`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from edgekit.types import IOBinding, TensorSpec

_VALID = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class NameMap:
    """Original -> sanitized names, for the names that changed only."""

    tensors: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    unnamed_nodes: int = 0

    def tensor(self, name: str) -> str:
        return self.tensors.get(name, name)

    def node(self, name: str) -> str:
        """The name a node of the user's model has in the backend's copy (for ConvertContext.float_layers)."""
        return self.nodes.get(name, name)

    def original(self, sanitized: str) -> str:
        back = {new: old for old, new in self.tensors.items()}
        return back.get(sanitized, sanitized)

    def specs(self, specs: list[TensorSpec]) -> list[TensorSpec]:
        """Model I/O specs under the names the backend sees."""
        return [replace(spec, name=self.tensor(spec.name)) for spec in specs]

    def restore(self, bindings: list[IOBinding]) -> list[IOBinding]:
        """Artifact bindings with the user's ONNX names put back."""
        return [replace(binding, onnx_name=self.original(binding.onnx_name)) for binding in bindings]

    def report(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> dict[str, Any] | None:
        """What the report says: the renamed model I/O (user's name -> name in the artifact's model) and counts."""
        if not (self.tensors or self.nodes):
            return None
        io = {spec.name: self.tensors[spec.name] for spec in [*inputs, *outputs] if spec.name in self.tensors}
        return {"io": io, "tensors_renamed": len(self.tensors), "nodes_renamed": len(self.nodes), "unnamed_nodes": self.unnamed_nodes}


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph in it (If branches, Loop and Scan bodies), depth first."""
    from onnx import AttributeProto

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _tensor_names(graph: Any) -> Iterator[str]:
    for sub in _graphs(graph):
        for value in (*sub.input, *sub.output, *sub.value_info):
            yield value.name
        for tensor in sub.initializer:
            yield tensor.name
        for sparse in sub.sparse_initializer:
            yield sparse.values.name
        for node in sub.node:
            yield from node.input
            yield from node.output


def _clean(name: str, prefix: str) -> str:
    cleaned = _INVALID_CHARS.sub("_", name)
    return cleaned if cleaned[:1].isalpha() else f"{prefix}_{cleaned}".rstrip("_") or prefix


class _Namer:
    def __init__(self, taken: set[str]) -> None:
        self.taken = set(taken)

    def fresh(self, candidate: str) -> str:
        name, suffix = candidate, 1
        while name in self.taken:
            name = f"{candidate}_{suffix}"
            suffix += 1
        self.taken.add(name)
        return name


def _node_keys(graph: Any) -> Iterator[tuple[Any, str | None]]:
    """Every node with the key of its rename, or None when its name stays (valid and first of its name)."""
    seen: set[str] = set()
    for position, node in enumerate(node for sub in _graphs(graph) for node in sub.node):
        if node.name and _VALID.match(node.name) and node.name not in seen:
            seen.add(node.name)
            yield node, None
        elif not node.name:
            yield node, f"<unnamed {node.op_type} #{position}>"
        else:
            yield node, node.name if node.name not in seen else f"{node.name} <duplicate #{position}>"
            seen.add(node.name)


def plan(model: Any) -> NameMap:
    """The renames ``model`` needs (empty when every name is valid and every node is named uniquely)."""
    names = list(dict.fromkeys(n for n in _tensor_names(model.graph) if n))  # "" marks an omitted optional input
    keys = list(_node_keys(model.graph))
    namer = _Namer({n for n in names if _VALID.match(n)} | {node.name for node, key in keys if key is None})
    mapping = NameMap()
    for name in names:
        if not _VALID.match(name):
            mapping.tensors[name] = namer.fresh(_clean(name, "t"))
    for position, (node, key) in enumerate(keys):
        if key is not None:
            mapping.unnamed_nodes += not node.name
            mapping.nodes[key] = namer.fresh(_clean(node.name, "n") if node.name else f"{node.op_type or 'node'}_{position}")
    return mapping


def sanitize(model: Any) -> tuple[Any, NameMap]:
    """A copy of ``model`` with valid, unique names, and the map from the user's names; ``model`` itself
    when nothing needs renaming."""
    import onnx

    mapping = plan(model)
    if not (mapping.tensors or mapping.nodes):
        return model, mapping
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    rename = mapping.tensor
    for sub in _graphs(renamed.graph):
        for value in (*sub.input, *sub.output, *sub.value_info):
            value.name = rename(value.name)
        for tensor in sub.initializer:
            tensor.name = rename(tensor.name)
        for sparse in sub.sparse_initializer:
            sparse.values.name = rename(sparse.values.name)
        for annotation in sub.quantization_annotation:
            annotation.tensor_name = rename(annotation.tensor_name)
        for node in sub.node:
            node.input[:] = [rename(n) if n else n for n in node.input]
            node.output[:] = [rename(n) if n else n for n in node.output]
    for node, key in list(_node_keys(renamed.graph)):  # keys first: renaming changes what "seen" means
        if key is not None:
            node.name = mapping.nodes[key]
    return renamed, mapping


#: keys of the locate/fallback report sections (edgekit.debug) whose values name ONNX nodes or tensors
_NODE_KEYS = frozenset({"node", "fused", "first_divergence", "added"})
_TENSOR_KEYS = frozenset({"output", "inputs"})
_TENSOR_DICT_KEYS = frozenset({"unmapped_examples"})


def user_node_ids(original: Any, named: Any) -> dict[str, str]:
    """Node ids (edgekit.debug.graph.node_id) in the renamed copy ``named`` -> the same node's id in ``original``,
    for the nodes whose id changed."""
    from edgekit.debug.graph import node_id

    pairs = ((node_id(new), node_id(old)) for old, new in zip(original.graph.node, named.graph.node, strict=True))
    return {new: old for new, old in pairs if new != old}


def user_names_in(section: Any, nodes: dict[str, str], mapping: NameMap) -> Any:
    """``section`` (a locate or fallback report section, measured on the renamed copy of the user's model) with node
    names (``nodes``: from :func:`user_node_ids`) and tensor names put back to the user's, so the report names what
    the user has."""
    if not (mapping.tensors or mapping.nodes) or section is None:
        return section
    tensors = {new: old for old, new in mapping.tensors.items()}

    def walk(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            if key in _TENSOR_DICT_KEYS:
                return {tensors.get(k, k): walk(v) for k, v in value.items()}
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(item, key) for item in value]
        if isinstance(value, str) and key in _NODE_KEYS:
            return nodes.get(value, value)
        if isinstance(value, str) and key in _TENSOR_KEYS:
            return tensors.get(value, value)
        return value

    return walk(section)
