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
from edgekit.backends.ncnn.format import TAGGED, read_param, split_weights, tagged_fp16, write_param
from edgekit.calibration import random_samples
from edgekit.types import Artifact

FEATMASK = 31
NO_FP16 = (1 << 0) | (1 << 1)  # no fp16 arithmetic; no fp16 storage or packing


def float_ncnn_layers(backend: Backend, ctx: ConvertContext, fp32_model: Artifact) -> tuple[set[str], dict[str, str], list[str]]:
    """For an fp32 ncnn model: the ncnn layers holding ``ctx.float_layers``, ONNX node -> how it is kept float,
    and the nodes no layer could be matched to."""
    from edgekit.debug.graph import Graph
    from edgekit.debug.locate import tensor_map

    graph = Graph(ctx.model)
    samples = ctx.calibration if ctx.calibration is not None else random_samples(ctx.inputs, 2, seed=0)
    mapping = tensor_map(backend, ctx, fp32_model, graph, samples)
    writer = {top: layer for layer in read_param(fp32_model.path.read_text()) for top in layer.tops}
    mapped = set(mapping.matches)
    layers: set[str] = set()
    applied: dict[str, str] = {}
    for tensor, match in mapping.matches.items():
        group = graph.group_for(tensor, mapped)
        layer = writer.get(match.artifact)
        if group is None or layer is None or not any(graph.ids[i] in ctx.float_layers for i in group.nodes):
            continue
        layers.add(layer.name)
        for index in group.nodes:
            applied[graph.ids[index]] = f"kept float: ncnn layer {layer.name} ({layer.type})"
    return layers, applied, sorted(ctx.float_layers - set(applied))


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
