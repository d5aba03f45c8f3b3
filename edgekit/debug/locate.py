"""Locate where a built artifact leaves onnxruntime: the SQNR of every layer it lets edgekit read, on the
verification samples, in topological order, and the first ONNX node whose output falls below the tolerance.

Two ways to read the inside of an artifact, chosen by ``Backend.intermediate_outputs``:

* ``named`` (ncnn, TFLite): the runtime returns any tensor by name. A float twin (the same conversion at
  fp32, so the same names) is matched to ONNX tensors by value (:mod:`edgekit.debug.mapping`), then the
  artifact itself runs with those tensors as outputs, through the same runner and transport as verification.
* ``reconvert`` (TensorRT, Core ML, any backend): convert again with ONNX tensors added as graph outputs (at
  most :data:`MAX_RECONVERT_TENSORS`, spread over the graph) and run that artifact. Converters may fuse
  differently around a graph output; the report says which method measured the curve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.backends.base import Backend, ConvertContext
from edgekit.calibration import SampleSet
from edgekit.debug.graph import Graph, chunks, reference_values, with_outputs
from edgekit.debug.mapping import Match, TensorMap, match_tensors, to_onnx_layout
from edgekit.errors import DeviceError, EdgekitError
from edgekit.metrics import compare, merge
from edgekit.modelio import save_model
from edgekit.profiles import Tolerance
from edgekit.remote.protocol import EXIT_MISSING
from edgekit.transport.base import Transport
from edgekit.transport.local import LocalTransport
from edgekit.types import Artifact, IOBinding, OutputMetrics, TensorSpec
from edgekit.verify import from_artifact_layout, run_artifact

MAPPING_SAMPLES = 2
LOCATE_SAMPLES = 4
#: tensor values one runner call returns (several calls for bigger models)
MAX_PROBE_BYTES = 128 << 20
MAX_RECONVERT_TENSORS = 64
_ESTIMATED_TENSOR_BYTES = 1 << 20  # for tensors whose shape inference gave no static shape


@dataclass
class LayerPoint:
    """One point of the per-layer curve: the artifact tensor standing for ``output``, against onnxruntime."""

    node: str  # the ONNX node the layer is named after (its weighted op if the converter fused several)
    op: str
    output: str  # the ONNX tensor compared
    sqnr_db: float
    cosine: float
    input_sqnr_db: float | None  # the worst of the layer's inputs (inf for graph inputs), None if none was compared
    fused: list[str] = field(default_factory=list)  # every ONNX node between the compared tensors
    inputs: list[str] = field(default_factory=list)  # the compared tensors (or graph inputs) it reads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "output": self.output, "sqnr_db": self.sqnr_db, "input_sqnr_db": self.input_sqnr_db}


@dataclass
class LocateResult:
    status: str  # "located" (a layer is below the tolerance), "no_divergence", "skipped"
    method: str
    reason: str | None = None
    seconds: float = 0.0
    samples: int = 0
    where: str = "host"
    layers: list[LayerPoint] = field(default_factory=list)
    unmapped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tolerance_db: float | None = None
    min_cosine: float = -1.0

    @property
    def first_divergence(self) -> LayerPoint | None:
        """The first layer (topological order) whose output fails the tolerance: SQNR or cosine below it, or NaN."""
        if self.tolerance_db is None:
            return None
        return next((p for p in self.layers if _below(p.sqnr_db, self.tolerance_db) or _below(p.cosine, self.min_cosine)), None)

    def worst_layers(self) -> list[LayerPoint]:
        """Layers by the noise they add themselves, worst first: where quantization hurts (see :func:`own_sqnr_db`)."""
        scored = [(own_sqnr_db(p), i, p) for i, p in enumerate(self.layers)]
        return [p for own, _, p in sorted(scored, key=lambda item: (item[0], item[1])) if own != math.inf]

    def to_dict(self) -> dict[str, Any]:
        """``verification.locate``: how the curve was measured, and what could not be."""
        return {"status": self.status, "method": self.method, "reason": self.reason, "seconds": self.seconds,
                "samples": self.samples, "where": self.where, "compared_tensors": len(self.layers),
                "unmapped_tensors": len(self.unmapped), "unmapped_examples": dict(list(self.unmapped.items())[:20]),
                "notes": self.notes}


@dataclass
class LocateRequest:
    backend: Backend
    ctx: ConvertContext  # the build's context (its model is what the backend converted)
    artifact: Artifact
    samples: SampleSet  # the verification samples
    tolerance: Tolerance
    transport: Transport | None = None  # where verification ran (None: this host)


def locate(request: LocateRequest) -> LocateResult:
    started = time.perf_counter()
    method = request.backend.intermediate_outputs
    where = request.transport.where if request.transport is not None else "host"
    try:
        if method == "named":
            result = _locate_named(request)
        elif method == "reconvert":
            result = _locate_reconverted(request)
        else:
            result = LocateResult("skipped", method, reason=f"the {request.backend.name} backend cannot expose the tensors inside its artifacts")
    except EdgekitError as exc:
        result = LocateResult("skipped", method, reason=exc.message)
    result.seconds, result.where = round(time.perf_counter() - started, 3), where
    result.tolerance_db, result.min_cosine = request.tolerance.min_sqnr_db, request.tolerance.min_cosine
    if result.status != "skipped":
        result.status = "located" if result.first_divergence is not None else "no_divergence"
    return result


def unlocked_host() -> LocalTransport:
    """This host, without the machine lock: reading tensors times nothing, so it need not wait for latency runs."""
    transport = LocalTransport()
    transport.lock_path = None
    return transport


# --- named tensors (ncnn blobs, TFLite tensors) ---------------------------------------------------


def tensor_map(backend: Backend, ctx: ConvertContext, twin: Artifact, graph: Graph, samples: SampleSet) -> TensorMap:
    """ONNX tensor -> twin tensor by value, on the first samples; cached in the work folder per twin."""
    key = hashlib.sha256(twin.path.read_bytes() + ctx.model.SerializeToString()).hexdigest()[:20]
    cached = (ctx.shared_dir or ctx.work_dir) / f"tensor-map-{key}.json"
    if cached.is_file():
        return TensorMap.from_dict(json.loads(cached.read_text()))
    mapping = samples.head(min(MAPPING_SAMPLES, samples.count))
    tensors = backend.artifact_tensors(twin)
    names = [t.name for t in tensors]
    bindings = {b.onnx_name: b for b in twin.outputs}
    # graph outputs are known by construction (and may be too small to match by value: 1x2 class scores)
    pinned = {t.output_of: Match(t.name, bindings[t.output_of].perm, math.nan) for t in tensors if t.output_of in bindings}
    onnx_tensors = graph.float_tensors()
    reference = _merged([reference_values(ctx.model, mapping, chunk) for chunk in chunks(onnx_tensors, _sizes(graph, onnx_tensors, mapping.count))], mapping.count)
    twin_values = _read_named(backend, twin, ctx, names, mapping, unlocked_host(), max(_sizes(graph, onnx_tensors, mapping.count).values(), default=0))
    result = match_tensors(reference, twin_values, names, pinned)
    cached.write_text(json.dumps(result.to_dict()))
    return result


def _locate_named(request: LocateRequest) -> LocateResult:
    backend, ctx, artifact = request.backend, request.ctx, request.artifact
    graph = Graph(ctx.model)
    twin = backend.float_twin(ctx, artifact)
    mapping = tensor_map(backend, ctx, twin, graph, request.samples)
    present = {t.name for t in backend.artifact_tensors(artifact)} if twin is not artifact else None
    unmapped = dict(mapping.unmapped)
    matched = {}
    for tensor, match in mapping.matches.items():
        if present is not None and match.artifact not in present:
            unmapped[tensor] = f"the float twin has it as '{match.artifact}', the built artifact does not"
        else:
            matched[tensor] = match
    ordered = [t for t in graph.float_tensors() if t in matched]
    metrics: dict[str, OutputMetrics] = {}
    transport = request.transport or unlocked_host()
    samples = _worst_samples(backend, ctx, artifact, request.samples, [t for t in ordered if t in graph.graph_outputs], matched,
                             transport, request.tolerance)
    for chunk in chunks(ordered, _sizes(graph, ordered, samples.count), MAX_PROBE_BYTES):
        reference = reference_values(ctx.model, samples, chunk)
        names = list(dict.fromkeys(matched[t].artifact for t in chunk))
        values = _read_named(backend, artifact, ctx, names, samples, transport, 0, fail_on_missing=True)
        for tensor in chunk:
            per_sample = [compare(tensor, reference[s][tensor], to_onnx_layout(values[s][matched[tensor].artifact], reference[s][tensor].shape,
                                                                               matched[tensor].perm), request.tolerance)
                          for s in range(samples.count) if tensor in reference[s]]
            if per_sample:
                metrics[tensor] = merge(per_sample, request.tolerance)
    notes = [f"{len(matched)} ONNX tensors mapped to artifact tensors by value on {min(MAPPING_SAMPLES, request.samples.count)} samples "
             f"(float twin: {twin.path.name})"]
    if samples.count < request.samples.count:
        notes.append(f"layers measured on the {samples.count} samples (of {request.samples.count}) where the outputs are worst")
    if backend.name == "tflite":
        notes.append("TFLite tensors are read with the builtin kernels (XNNPACK hides intermediate tensors); verification used XNNPACK")
    return LocateResult("located", "named", samples=samples.count, layers=curve(graph, metrics), unmapped=unmapped, notes=notes)


def _worst_samples(backend: Backend, ctx: ConvertContext, artifact: Artifact, samples: SampleSet, outputs: list[str], matched: dict[str, Match],
                   transport: Transport, tolerance: Tolerance) -> SampleSet:
    """The :data:`LOCATE_SAMPLES` samples on which the artifact's outputs are worst (one cheap outputs-only run over
    all of them): a failure on a few samples is located on those samples."""
    if samples.count <= LOCATE_SAMPLES or not outputs:
        return samples.head(min(LOCATE_SAMPLES, samples.count))
    reference = reference_values(ctx.model, samples, outputs)
    values = _read_named(backend, artifact, ctx, [matched[t].artifact for t in outputs], samples, transport, 0)
    scores = []
    for s in range(samples.count):
        checked = [compare(t, reference[s][t], to_onnx_layout(values[s][matched[t].artifact], reference[s][t].shape, matched[t].perm), tolerance)
                   for t in outputs if t in reference[s] and matched[t].artifact in values[s]]
        scores.append(min(((0 if c.passed else -1), c.cosine if math.isfinite(c.cosine) else -math.inf,
                           c.sqnr_db if math.isfinite(c.sqnr_db) else -math.inf) for c in checked) if checked else (0, 1.0, math.inf))
    worst = sorted(range(samples.count), key=lambda s: scores[s])[:LOCATE_SAMPLES]
    rows = sorted(worst)
    return SampleSet({name: array[rows] for name, array in samples.arrays.items()}, samples.source)


def _read_named(backend: Backend, artifact: Artifact, ctx: ConvertContext, names: list[str], samples: SampleSet, transport: Transport,
                bytes_per_tensor: int, fail_on_missing: bool = False) -> list[dict[str, np.ndarray]]:
    """The named tensors of ``artifact`` on each sample (float ones), a few runner calls at a time."""
    out: list[dict[str, np.ndarray]] = [{} for _ in range(samples.count)]
    per_call = max(1, MAX_PROBE_BYTES // max(bytes_per_tensor or _ESTIMATED_TENSOR_BYTES, 1))
    options = backend.probe_options(artifact, ctx.profile)
    for start in range(0, len(names), per_call):
        batch = names[start : start + per_call]
        probe = dataclasses.replace(artifact, outputs=[IOBinding(n, n) for n in batch])
        ran = run_artifact(probe, samples, transport, warmup=0, runs=0, options=options)
        if ran.exit_code == EXIT_MISSING:
            raise DeviceError(f"the {artifact.runtime} runtime is not available {'on this host' if transport.where == 'host' else 'on the device'}: {ran.error}")
        if ran.exit_code != 0:
            raise DeviceError(f"reading the artifact's tensors failed ({ran.error_kind}): {ran.error}")
        for s in range(samples.count):
            for k, name in enumerate(batch):
                value = ran.produced.get(f"s{s}_o{k}")
                if value is not None and value.dtype.kind == "f":
                    out[s][name] = value
    return out


# --- an ONNX stand-in (TensorRT's QDQ model) ------------------------------------------------------


def locate_onnx(reference: Any, candidate: Any, samples: SampleSet, tolerance: Tolerance) -> LocateResult:
    """Compare two ONNX models that share tensor names (a model and its QDQ copy, both run by onnxruntime)."""
    started = time.perf_counter()
    graph = Graph(reference)
    samples = samples.head(min(LOCATE_SAMPLES, samples.count))
    present = {out for node in candidate.graph.node for out in node.output}
    ordered = [t for t in graph.float_tensors() if t in present]
    metrics: dict[str, OutputMetrics] = {}
    for chunk in chunks(ordered, _sizes(graph, ordered, samples.count), MAX_PROBE_BYTES):
        expected, got = reference_values(reference, samples, chunk), reference_values(candidate, samples, chunk)
        for tensor in chunk:
            per_sample = [compare(tensor, expected[s][tensor], got[s][tensor], tolerance) for s in range(samples.count)
                          if tensor in expected[s] and tensor in got[s]]
            if per_sample:
                metrics[tensor] = merge(per_sample, tolerance)
    unmapped = {t: "not in the quantized model" for t in graph.float_tensors() if t not in present}
    result = LocateResult("located", "onnx", samples=samples.count, layers=curve(graph, metrics), unmapped=unmapped,
                          notes=["both models run by onnxruntime; tensors matched by name"], tolerance_db=tolerance.min_sqnr_db,
                          min_cosine=tolerance.min_cosine)
    result.status = "located" if result.first_divergence is not None else "no_divergence"
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# --- reconverting with extra outputs --------------------------------------------------------------


def _locate_reconverted(request: LocateRequest) -> LocateResult:
    backend, ctx = request.backend, request.ctx
    graph = Graph(ctx.model)
    samples = request.samples.head(min(LOCATE_SAMPLES, request.samples.count))
    candidates = [t for t in graph.float_tensors() if t not in graph.graph_outputs and graph.shapes.get(t)]
    step = max(1, math.ceil(len(candidates) / MAX_RECONVERT_TENSORS))
    chosen = candidates[step - 1 :: step][:MAX_RECONVERT_TENSORS]
    folder = ctx.work_dir / "locate-reconvert"
    folder.mkdir(exist_ok=True)
    model = with_outputs(ctx.model, chosen)
    extra = [TensorSpec(t, tuple(graph.shapes[t] or ()), "float32") for t in chosen]
    probe_ctx = dataclasses.replace(ctx, model=model, model_path=save_model(model, folder / ctx.model_path.name), outputs=[*ctx.outputs, *extra],
                                    work_dir=folder, stages=[], artifact_stem=f"{ctx.artifact_stem}-probe", log=lambda message: None)
    probe = backend.convert(probe_ctx)
    ran = run_artifact(probe, samples, request.transport or unlocked_host(), warmup=0, runs=0, options=backend.runner_options(probe, ctx.profile))
    if ran.exit_code != 0:
        why = "is not available here" if ran.exit_code == EXIT_MISSING else f"failed ({ran.error_kind})"
        return LocateResult("skipped", "reconvert", reason=f"the {probe.runtime} runtime {why}: {ran.error}")
    reference = reference_values(ctx.model, samples, chosen + [o.name for o in ctx.outputs])
    metrics: dict[str, OutputMetrics] = {}
    for k, binding in enumerate(probe.outputs):
        per_sample = [compare(binding.onnx_name, reference[s][binding.onnx_name],
                              from_artifact_layout(ran.produced[f"s{s}_o{k}"], binding, reference[s][binding.onnx_name].shape), request.tolerance)
                      for s in range(samples.count) if f"s{s}_o{k}" in ran.produced and binding.onnx_name in reference[s]]
        if per_sample:
            metrics[binding.onnx_name] = merge(per_sample, request.tolerance)
    skipped = {t: f"not among the tensors added as outputs (at most {MAX_RECONVERT_TENSORS} per conversion)" for t in candidates if t not in metrics}
    notes = [f"converted again with {len(chosen)} ONNX tensors as extra graph outputs; the converter may fuse differently around them"]
    return LocateResult("located", "reconvert", samples=samples.count, layers=curve(graph, metrics), unmapped=skipped, notes=notes)


# --- the curve ----------------------------------------------------------------------------------


def curve(graph: Graph, metrics: dict[str, OutputMetrics]) -> list[LayerPoint]:
    """One point per compared tensor, in topological order, named after the nodes behind it."""
    compared = set(metrics)
    points = []
    for tensor in graph.float_tensors():
        if tensor not in metrics:
            continue
        group = graph.group_for(tensor, compared)
        if group is None:
            continue
        inputs = [metrics[i].sqnr_db if i in metrics else math.inf for i in group.inputs if i in metrics or i in graph.graph_inputs]
        points.append(LayerPoint(node=graph.ids[group.anchor], op=graph.op(group.anchor), output=tensor,
                                 sqnr_db=_rounded(metrics[tensor].sqnr_db), cosine=_rounded(metrics[tensor].cosine, 6),
                                 input_sqnr_db=_rounded(min(inputs)) if inputs else None,
                                 fused=[graph.ids[i] for i in group.nodes] if len(group.nodes) > 1 else [],
                                 inputs=[i for i in group.inputs if i in metrics or i in graph.graph_inputs]))
    return points


def own_sqnr_db(point: LayerPoint) -> float:
    """The SQNR of the noise a layer adds on top of what it received. Noise powers add (relative to the signal),
    so a layer fed at 33 dB that outputs 10 dB adds noise at about 10 dB, while the first layer, fed the exact
    input, adds what it outputs. NaN or -inf out of finite inputs is the worst (-inf); no added noise is +inf."""
    out = point.sqnr_db
    fed = point.input_sqnr_db if point.input_sqnr_db is not None else math.inf
    if math.isnan(out) or out == -math.inf:
        return math.inf if math.isnan(fed) or fed == -math.inf else -math.inf  # inherited, or made here
    if out == math.inf:
        return math.inf
    added = 10.0 ** (-out / 10.0) - (10.0 ** (-fed / 10.0) if math.isfinite(fed) else 0.0)
    return -10.0 * math.log10(added) if added > 0 else math.inf


def _below(sqnr: float, limit: float) -> bool:
    """Below the tolerance, counting NaN (a NaN never passes)."""
    return math.isnan(sqnr) or sqnr < limit


def _rounded(value: float, digits: int = 2) -> float:
    return round(value, digits) if math.isfinite(value) else value


def _sizes(graph: Graph, tensors: list[str], samples: int) -> dict[str, int]:
    return {t: (int(np.prod(graph.shapes[t])) * 4 if graph.shapes.get(t) else _ESTIMATED_TENSOR_BYTES) * samples for t in tensors}


def _merged(parts: list[list[dict[str, np.ndarray]]], count: int) -> list[dict[str, np.ndarray]]:
    merged: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
    for part in parts:
        for s, values in enumerate(part):
            merged[s].update(values)
    return merged

