"""TFLite (LiteRT) backend: onnx2tf converts ONNX to a TensorFlow SavedModel and float TFLite
files; fp16 comes from onnx2tf, dynamic-range and int8 from TensorFlow's TFLiteConverter over
that SavedModel with edgekit's own calibration data (so calibration is exactly what the user gave).

Layout: onnx2tf makes 4-D inputs NHWC (the mobile convention); inputs of other ranks are kept
as they are (``-kat``), so token/sequence models keep their ONNX shape.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends._subprocess import run_tool
from edgekit.backends.base import ArtifactTensor, Backend, ConvertContext
from edgekit.backends.options import BackendOptions, option
from edgekit.errors import StageError
from edgekit.profiles import TargetProfile
from edgekit.types import Artifact, IOBinding, TensorSpec

NHWC = (0, 2, 3, 1)
# onnx2tf looks for this file in its working directory and downloads it when it is missing.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
TOOL = [sys.executable, "-m", "edgekit.backends.tflite.tool"]
# Keras' route costs 40x the weights in memory or more (onnx2tf_graph.py has the measurements): from 64 M
# parameters (256 MB of fp32) on, that is more than most build hosts have
GRAPH_ROUTE_PARAMETERS = 64 * 2**20


@dataclass(frozen=True)
class TFLiteOptions(BackendOptions):
    label = "TFLite"

    int8_io: str = option("float", choices=("float", "int8"))  # int8 builds: float or int8 model inputs/outputs
    num_threads: int = option(4, minimum=1, maximum=256)
    # how onnx2tf makes its float TFLite files: from the Keras model (keeps a SignatureDef) or from the frozen
    # graph (no Keras JSON of the weights: a fraction of the memory for big models); auto: graph from
    # GRAPH_ROUTE_PARAMETERS parameters up
    float_route: str = option("auto", choices=("auto", "keras", "graph"))


class TFLiteBackend(Backend):
    name = "tflite"
    extra = "tflite"
    runtime = "tflite"
    unsupported_ops = {
        "Loop": "onnx2tf does not convert ONNX control flow (Loop)",
        "Scan": "onnx2tf does not convert Scan",
        "SequenceConstruct": "sequence types have no TFLite equivalent",
        "SequenceAt": "sequence types have no TFLite equivalent",
        "StringNormalizer": "string tensors are not supported by TFLite builtins",
        "TfIdfVectorizer": "not converted by onnx2tf",
    }

    Options = TFLiteOptions
    tool_distributions = ("onnx2tf", "tensorflow", "ai-edge-litert")
    intermediate_outputs = "named"
    float_layer_precisions = frozenset({"int8"})  # selective int8 (QuantizationDebugger); fp16 is onnx2tf's whole-model file

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        return {"num_threads": self.options(profile).num_threads}

    def blocking_ops_at(self, model: Any, precision: str) -> list[str]:
        found = self.blocking_ops(model)
        recurrent = [n.name or "<unnamed>" for n in model.graph.node if n.op_type in RECURRENT_OPS] if precision == "int8" else []
        if recurrent:
            found.append(f"LSTM/GRU/RNN at int8 ({', '.join(recurrent[:5])}): TensorFlow's int8 calibrator crashes (SIGSEGV) on "
                         "recurrent layers; build them with --precision dynamic (int8 weights, float activations) or fp16")
        return found

    # --- locating a divergence -----------------------------------------------------------------

    def artifact_tensors(self, artifact: Artifact) -> list[ArtifactTensor]:
        listing = _listing(artifact)
        onnx_names = {listing["outputs"][b.artifact_name]: b.onnx_name for b in artifact.outputs if b.artifact_name in listing.get("outputs", {})}
        return [ArtifactTensor(t["name"], tuple(t["shape"]), onnx_names.get(t["name"])) for t in listing["tensors"]]

    def probe_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        return {**self.runner_options(artifact, profile), "intermediates": True}

    def float_twin(self, ctx: ConvertContext, artifact: Artifact) -> Artifact:
        """onnx2tf's float32 file from the same conversion: the same TensorFlow graph, so the same tensor names."""
        twin = Path(artifact.details.get("float_twin") or "")
        if artifact.precision == "fp32" or not twin.is_file():
            return super().float_twin(ctx, artifact)
        signature = self._signature(twin, ctx.work_dir)
        return Artifact(path=twin, backend=self.name, precision="fp32", runtime=self.runtime,
                        inputs=self._input_bindings(ctx.inputs, signature), outputs=self._output_bindings(ctx.outputs, signature))

    # --- conversion ------------------------------------------------------------------------

    def convert(self, ctx: ConvertContext) -> Artifact:
        versions = self.check_tools()
        int8_io = ctx.options.int8_io
        saved_model, float_files = self._onnx2tf(ctx, versions["onnx2tf"])
        started = time.perf_counter()
        target = ctx.work_dir / f"{ctx.artifact_stem}.tflite"
        details: dict[str, Any] = {"int8_io": int8_io if ctx.precision == "int8" else "float", "tools": versions,
                                   "float_twin": str(float_files["fp32"])}
        if ctx.precision in ("fp32", "fp16"):
            source = float_files["fp32" if ctx.precision == "fp32" else "fp16"]
            shutil.copyfile(source, target)  # a copy: fallback rounds and the float twin reuse onnx2tf's files
            ctx.record("quantize", started, "onnx2tf", versions["onnx2tf"], mode=ctx.precision, note="written by onnx2tf")
        else:
            fp32_signature = self._signature(float_files["fp32"], ctx.work_dir)
            input_bindings = self._input_bindings(ctx.inputs, fp32_signature)
            denylist: list[str] = []
            if ctx.float_layers and ctx.precision in self.float_layer_precisions:
                twin = Artifact(path=float_files["fp32"], backend=self.name, precision="fp32", runtime=self.runtime,
                                inputs=input_bindings, outputs=self._output_bindings(ctx.outputs, fp32_signature))
                denylist, details["float_layers"], details["float_layers_unmapped"] = denylisted_ops(self, ctx, twin)
                details["tflite_float_ops"] = denylist
            self._quantize(ctx, saved_model, target, input_bindings, int8_io, versions["tensorflow"], started, denylist)
        details["signature"] = signature = self._signature(target, ctx.work_dir)
        inputs = self._input_bindings(ctx.inputs, signature)
        outputs = self._output_bindings(ctx.outputs, signature)
        # the report says where the artifact's I/O came from: its SignatureDef, or tensor details matched by name/order
        ctx.stages[-1].detail["tflite_io"] = {"source": signature.get("source", "signature"), "matched": sorted(signature.pop("matched", set()))}
        return Artifact(path=target, backend=self.name, precision=ctx.precision, runtime=self.runtime,
                        inputs=inputs, outputs=outputs, details=details)

    def _onnx2tf(self, ctx: ConvertContext, version: str) -> tuple[Path, dict[str, Path]]:
        started = time.perf_counter()
        stem = ctx.model_path.stem
        # one onnx2tf run per model and build: the float twin and fallback rounds reuse it
        source, rewritten = self._onnx2tf_input(ctx)
        route = float_route(ctx)
        digest = hashlib.sha256(ctx.model.SerializeToString())
        digest.update(repr((rewritten, route)).encode())  # e.g. int8 converts the edge-padded model (onnx_fixes)
        out = (ctx.shared_dir or ctx.work_dir) / f"onnx2tf-{digest.hexdigest()[:16]}"
        files = {"fp32": out / f"{stem}_float32.tflite", "fp16": out / f"{stem}_float16.tflite"}
        if all(path.is_file() for path in files.values()) and (out / "saved_model.pb").is_file():
            ctx.record("convert", started, "onnx2tf", version, saved_model=True, reused=out.name)
            return out, files
        self._write_onnx2tf_sample(ctx)
        launcher = "onnx2tf" if route == "keras" else "edgekit.backends.tflite.onnx2tf_graph"
        argv = [sys.executable, "-m", launcher, "-i", str(source), "-o", str(out), "-osd", "-coion", "-n"]
        keep = [spec.name for spec in ctx.inputs if len(spec.shape) != 4]
        if keep:
            argv += ["-kat", *keep]
        ctx.log("onnx2tf: converting to a TensorFlow SavedModel")
        run_tool(argv, ctx.work_dir, stage="convert", tool="onnx2tf", log_name="onnx2tf.log")
        for path in files.values():
            if not path.is_file():
                raise StageError(f"convert: onnx2tf exited cleanly but did not write {path.name}", hint=f"see {ctx.work_dir / 'onnx2tf.log'}")
        named = {kind: [ctx.user_node(node) for node in nodes] for kind, nodes in rewritten.items()}
        ctx.record("convert", started, "onnx2tf", version, saved_model=True, nhwc_inputs=[s.name for s in ctx.inputs if len(s.shape) == 4],
                   float_route=route, max_pools_edge_padded=named.pop("max_pools_edge_padded", []), **named)
        return out, files

    @staticmethod
    def _onnx2tf_input(ctx: ConvertContext) -> tuple[Path, dict[str, list[str]]]:
        """The model onnx2tf converts, and the nodes rewritten for it (see onnx_fixes): Gathers of one concatenated
        input read it directly; for int8, padded MaxPools read edge-replicated input."""
        from edgekit.backends.tflite.onnx_fixes import gathers_from_concats, max_pool_edges
        from edgekit.modelio import save_model

        model, rewritten = ctx.model, {}
        model, rewritten["gathers_from_concats"] = gathers_from_concats(model)
        if ctx.precision == "int8":
            model, rewritten["max_pools_edge_padded"] = max_pool_edges(model)
        rewritten = {kind: nodes for kind, nodes in rewritten.items() if nodes}
        return (save_model(model, ctx.work_dir / "rewritten" / ctx.model_path.name), rewritten) if rewritten else (ctx.model_path, {})

    @staticmethod
    def _write_onnx2tf_sample(ctx: ConvertContext) -> None:
        """Give onnx2tf the image sample it would otherwise download (values in 0..1, NHWC)."""
        rng = np.random.default_rng(0)
        np.save(ctx.work_dir / ONNX2TF_SAMPLE, rng.random((20, 128, 128, 3), dtype=np.float32))

    def _quantize(self, ctx: ConvertContext, saved_model: Path, target: Path, inputs: list[IOBinding], int8_io: str, tf_version: str,
                  started: float, denylist: list[str]) -> None:
        argv = [*TOOL, "quantize", "--saved-model", str(saved_model),
                "--out", str(target), "--mode", ctx.precision, "--io", int8_io]
        if denylist:
            (ctx.work_dir / "denylist.json").write_text(json.dumps(denylist))
            argv += ["--denylist", str(ctx.work_dir / "denylist.json")]
        samples = 0
        if ctx.precision == "int8":
            if ctx.calibration is None:
                raise StageError("quantize: int8 needs calibration data")  # the pipeline checks this earlier
            from edgekit.verify import to_artifact_layout

            # [N, *artifact shape], laid out exactly as verification feeds it: one sample per representative-dataset step
            samples = ctx.calibration.count
            calib = {b.artifact_name: np.stack([to_artifact_layout(ctx.calibration.sample(i)[b.onnx_name], b) for i in range(samples)])
                     for b in inputs}
            np.savez(ctx.work_dir / "calibration_tf.npz", **calib)
            argv += ["--calib", str(ctx.work_dir / "calibration_tf.npz")]
        ctx.log(f"TFLiteConverter: {ctx.precision} quantization")
        run_tool(argv, ctx.work_dir, stage="quantize", tool="TFLiteConverter", log_name="quantize.log")
        detail: dict[str, Any] = {"mode": ctx.precision}
        if ctx.precision == "int8":
            detail.update(calibration_samples=samples, io=int8_io, per_channel=True)
        if denylist:
            detail.update(float_ops=len(denylist), via="tf.lite.experimental.QuantizationDebugger denylisted_nodes")
        ctx.record("quantize", started, "tensorflow.lite.TFLiteConverter", tf_version, **detail)

    @staticmethod
    def _signature(path: Path, work_dir: Path) -> dict[str, Any]:
        run = run_tool([*TOOL, "signature", str(path)], work_dir, stage="convert", tool="the TFLite signature reader",
                       log_name="signature.log", timeout=300)
        return run.last_json("convert: reading the TFLite model's signature")

    @staticmethod
    def _input_bindings(specs: list[TensorSpec], signature: dict[str, Any]) -> list[IOBinding]:
        available = signature["inputs"]
        bindings: list[IOBinding] = []
        for index, spec in enumerate(specs):
            perm = NHWC if len(spec.shape) == 4 else None
            expected = [spec.shape[i] for i in perm] if perm else list(spec.shape)
            name = _tensor_for(spec.name, index, "inputs", signature, [expected], {b.artifact_name for b in bindings})
            if name is None:
                raise StageError(f"convert: the TFLite model has no input matching ONNX input '{spec.name}' (it has {', '.join(available)})")
            shape = list(available[name]["shape"])
            reshaped = shape != expected and _squeezed(shape) == _squeezed(expected)  # a scalar as [1]
            if shape != expected and not reshaped:
                raise StageError(f"convert: TFLite input '{name}' has shape {shape}, expected {expected} from ONNX {list(spec.shape)}")
            bindings.append(IOBinding(spec.name, name, perm, artifact_shape=tuple(shape) if reshaped else None))
        return bindings

    @staticmethod
    def _output_bindings(specs: list[TensorSpec], signature: dict[str, Any]) -> list[IOBinding]:
        available = signature["outputs"]
        bindings: list[IOBinding] = []
        for index, spec in enumerate(specs):
            onnx_shape = list(spec.shape)
            channels_last = (0, *range(2, len(onnx_shape)), 1) if len(onnx_shape) >= 3 else None
            layouts = [onnx_shape] + ([[onnx_shape[i] for i in channels_last]] if channels_last else [])
            name = _tensor_for(spec.name, index, "outputs", signature, layouts, {b.artifact_name for b in bindings})
            if name is None:
                raise StageError(f"convert: the TFLite model has no output matching ONNX output '{spec.name}' (it has {', '.join(available)})")
            shape = list(available[name]["shape"])
            if channels_last and shape == [onnx_shape[i] for i in channels_last] and (shape != onnx_shape or len(onnx_shape) == 4):
                # Ambiguous only when both layouts have the same shape; onnx2tf emits 4-D outputs channels-last.
                perm = channels_last
            else:
                # same shape, or a converter error that verification reports against this output ("shape mismatch")
                perm = None
            bindings.append(IOBinding(spec.name, name, perm))
        return bindings


#: TensorFlow 2.19's int8 calibrator segfaults (in calibrator.py _feed_tensors) on models with these layers,
#: measured on the zoo's ddddocr recognizer (bidirectional LSTM) and Resemblyzer (3-layer LSTM)
RECURRENT_OPS = ("LSTM", "GRU", "RNN")




def float_route(ctx: ConvertContext) -> str:
    """"keras" or "graph": the profile's choice, or by the model's size (see GRAPH_ROUTE_PARAMETERS)."""
    chosen = ctx.options.float_route
    if chosen != "auto":
        return chosen
    from edgekit.modelio import parameter_count

    return "graph" if parameter_count(ctx.model) >= GRAPH_ROUTE_PARAMETERS else "keras"


def _squeezed(shape: list) -> list:
    return [d for d in shape if d != 1]


def _tensor_for(onnx_name: str, index: int, kind: str, signature: dict[str, Any], shapes: list[list], taken: set[str]) -> str | None:
    """The artifact tensor for the ``index``-th ONNX input/output: by name; else, in a file without a SignatureDef
    (whose tensors carry whatever names the converter left, in an order of its own), the one untaken tensor of
    the expected shape, else the ``index``-th tensor. ``signature["matched"]`` collects how (for the report)."""
    names = [name for name in signature[kind] if name not in taken]
    found = _match_name(onnx_name, names)
    if found is None and kind == "outputs" and f"output_{index}" in names:
        found = f"output_{index}"  # TFLiteConverter renames SavedModel outputs by position
    how = "by_name"
    if found is None and signature.get("source") == "tensor_details":
        fitting = [n for n in names if any(_squeezed(list(signature[kind][n]["shape"])) == _squeezed(s) for s in shapes)]
        ordered = list(signature[kind])
        if len(fitting) == 1:
            found, how = fitting[0], "by_shape"
        elif index < len(ordered) and ordered[index] not in taken:
            found, how = ordered[index], "by_order"
    if found is not None:
        signature.setdefault("matched", set()).add(how)
    return found


def denylisted_ops(backend: Backend, ctx: ConvertContext, twin: Artifact) -> tuple[list[str], dict[str, str], list[str]]:
    """The TFLite ops (by output tensor name) that keep ``ctx.float_layers`` in float: the op writing each float
    layer's tensor, and the ops writing its inputs, because TFLite quantizes a tensor where it is written (a float
    op fed by an int8 tensor would still see the rounded values). ONNX nodes map to ops by value (edgekit.debug)."""
    from edgekit.calibration import random_samples
    from edgekit.debug.graph import Graph
    from edgekit.debug.locate import tensor_map
    from edgekit.debug.mapping import ArtifactOp, ops_between

    graph = Graph(ctx.model)
    samples = ctx.calibration if ctx.calibration is not None else random_samples(ctx.inputs, 2, seed=0)
    mapping = tensor_map(backend, ctx, twin, graph, samples)
    listing = _listing(twin)
    ops = [ArtifactOp(op["outputs"][0], op["type"], tuple(op["inputs"]), tuple(op["outputs"])) for op in listing["ops"] if op["outputs"]]
    mapped = set(mapping.matches)
    stops = {match.artifact for match in mapping.matches.values()} | {name for op in ops if op.type == "QUANTIZE" for name in op.inputs}
    names: dict[str, None] = {}
    applied: dict[str, str] = {}
    covered: set[str] = set()

    def keep(tensor: str, why: str) -> None:
        group = graph.group_for(tensor, mapped)
        for op in ops_between(ops, mapping.matches[tensor].artifact, stops - {mapping.matches[tensor].artifact}):
            names.update(dict.fromkeys(op.outputs))
        if group is not None:
            applied.setdefault(graph.ids[group.anchor], why)
            covered.update(graph.ids[i] for i in group.nodes)

    for tensor in [t for t in graph.float_tensors() if t in mapped]:
        group = graph.group_for(tensor, mapped)
        if group is None or not any(graph.ids[i] in ctx.float_layers for i in group.nodes):
            continue
        keep(tensor, f"kept float: TFLite op(s) writing {mapping.matches[tensor].artifact}")
        for source in group.inputs:
            if source in mapped:
                keep(source, "kept float: it writes the input of a float layer (TFLite quantizes a tensor where it is written)")
    return list(names), applied, sorted(ctx.float_layers - covered)


def _listing(artifact: Artifact) -> dict[str, Any]:
    """Every tensor the TFLite model's ops write, its ops (inputs, outputs by tensor name), its signature outputs."""
    path = artifact.path.resolve()
    run = run_tool([*TOOL, "tensors", str(path)], path.parent, stage="locate", tool="the TFLite tensor reader", log_name="tensors.log", timeout=300)
    return run.last_json("locate: listing the TFLite model's tensors")


def _match_name(onnx_name: str, candidates: list[str]) -> str | None:
    """The candidate named like the ONNX tensor: exactly, sanitized, or as TensorFlow names a signature's tensors in a
    file without the SignatureDef (``serving_default_NAME:0``)."""
    if onnx_name in candidates:
        return onnx_name
    sanitized = "".join(c if c.isalnum() or c == "_" else "_" for c in onnx_name).lower()
    for candidate in candidates:
        bare = re.sub(r":\d+$", "", re.sub(r"^serving_default_", "", candidate))
        if sanitized in (candidate.lower(), bare.lower()):
            return candidate
    return None
