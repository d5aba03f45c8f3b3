"""Per-layer precision for ncnn builds: which ncnn layers hold the ONNX nodes to keep in float, and the fp16
model with some layers in fp32.

* int8: those layers are left out of the int8 rewrite (no int8 weights, no activation scale), as if ncnn2int8
  had no table entry for them.
* fp16: those layers keep fp32 weights and get ncnn's per-layer feature mask ``31=3`` (no fp16 arithmetic, no
  fp16 storage: src/net.cpp ``get_masked_option``); every other layer's weights are written as pnnx ``fp16=1``
  writes them (:func:`~edgekit.backends.ncnn.format.tagged_fp16`).

ncnn layers map to ONNX nodes by value (:mod:`edgekit.debug.mapping`): the fp32 model runs on a few samples and
each blob is matched to the ONNX tensor it reproduces; the layer writing that blob holds every ONNX node fused
into it. A node that maps to no layer is reported, never guessed.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.backends.base import Backend, ConvertContext
from edgekit.backends.ncnn.format import TAGGED, Layer, read_param, split_weights, tagged_fp16, write_param
from edgekit.calibration import random_samples
from edgekit.types import Artifact

FEATMASK = 31
NO_FP16 = (1 << 0) | (1 << 1)  # no fp16 arithmetic; no fp16 storage or packing


def layer_groups(backend: Backend, ctx: ConvertContext, fp32_model: Artifact) -> list[tuple[list[Layer], list[str], str]]:
    """(the ncnn layers, the ONNX nodes they compute, the node they are named after) for every blob of an fp32 ncnn
    model that was matched by value to an ONNX tensor: the layers from the previous matched blobs up to it."""
    from edgekit.debug.graph import Graph
    from edgekit.debug.locate import tensor_map
    from edgekit.debug.mapping import ArtifactOp, ops_between

    graph = Graph(ctx.model)
    samples = ctx.calibration if ctx.calibration is not None else random_samples(ctx.inputs, 2, seed=0)
    mapping = tensor_map(backend, ctx, fp32_model, graph, samples)
    layers = read_param(fp32_model.path.read_text())
    by_name = {layer.name: layer for layer in layers}
    ops = [ArtifactOp(layer.name, layer.type, tuple(layer.bottoms), tuple(layer.tops)) for layer in layers if layer.type != "Input"]
    mapped = set(mapping.matches)
    blobs = {match.artifact for match in mapping.matches.values()} | {b.artifact_name for b in fp32_model.inputs}
    found: dict[tuple[str, ...], tuple[list[Layer], list[str], str]] = {}
    for tensor, match in mapping.matches.items():
        group = graph.group_for(tensor, mapped)
        between = ops_between(ops, match.artifact, blobs - {match.artifact})
        if group is None or not between:
            continue
        key = tuple(op.name for op in between)
        nodes = [graph.ids[i] for i in group.nodes]
        if key in found:  # a blob equal to several ONNX tensors (reshapes of one value): one group, all their nodes
            before = found[key]
            anchor = before[2] if len(before[1]) >= len(nodes) else graph.ids[group.anchor]
            found[key] = (before[0], before[1] + [n for n in nodes if n not in before[1]], anchor)
        else:
            found[key] = ([by_name[name] for name in key], nodes, graph.ids[group.anchor])
    return list(found.values())


def float_ncnn_layers(backend: Backend, ctx: ConvertContext, fp32_model: Artifact) -> tuple[set[str], dict[str, str], list[str]]:
    """For an fp32 ncnn model: the ncnn layers holding ``ctx.float_layers``, ONNX node -> how it is kept float,
    and the nodes no layer could be matched to."""
    names: set[str] = set()
    covered: set[str] = set()
    applied: dict[str, str] = {}
    for layers, nodes, anchor in layer_groups(backend, ctx, fp32_model):
        if any(node in ctx.float_layers for node in nodes):
            names.update(layer.name for layer in layers)
            covered.update(nodes)
            applied[anchor] = "kept float: ncnn layer(s) " + ", ".join(f"{layer.name} ({layer.type})" for layer in layers)
    return names, applied, sorted(ctx.float_layers - covered)


def no_int8_layers(backend: Backend, ctx: ConvertContext, fp32_model: Artifact, kept: dict[str, str]) -> dict[str, str]:
    """ONNX node -> why, for ncnn layers (name -> type) the int8 rewrite keeps float because ncnn has no int8 kernel."""
    found = {}
    for layers, nodes, anchor in layer_groups(backend, ctx, fp32_model):
        for layer in layers:
            if layer.name in kept:
                found[anchor] = f"ncnn int8 has no {layer.type} kernel: ncnn layer {layer.name} keeps float weights ({len(nodes)} ONNX nodes)"
    return found


def fp16_except(param: Path, fp32_weights: Path, float_layers: set[str]) -> tuple[str, bytes]:
    """The fp16 .param/.bin of an fp32 ncnn model, with ``float_layers`` kept fp32."""
    layers = read_param(param.read_text())
    blobs = split_weights(layers, fp32_weights.read_bytes())
    out = bytearray()
    for layer in layers:
        keep = layer.name in float_layers
        if keep:
            layer.set(FEATMASK, layer.get_int(FEATMASK) | NO_FP16)
        for blob in blobs[layer.name]:
            out += blob.raw if keep or blob.kind != TAGGED or blob.storage != "fp32" else tagged_fp16(blob.values)
    return write_param(layers), bytes(out)
