"""ncnn backend (Android phones, aarch64 boards): pnnx converts the ONNX model to ncnn .param/.bin.

* fp32: pnnx ``fp16=0`` (fp32 weights); the runtime runs with ncnn's fp16/bf16 options off.
* fp16: pnnx ``fp16=1`` (fp16 weights in the .bin); the runtime gets ``use_fp16_storage``,
  ``use_fp16_packed`` and ``use_fp16_arithmetic`` (the last only takes effect on ARMv8.2+ CPUs).
* int8: ncnn2table/ncnn2int8 are not in the ncnn wheel, so edgekit does their work in Python
  (``int8.py``): KL-calibrated activation scales from the fp32 model run in ncnn over the user's
  calibration data, per-channel weight scales, and the int8 rewrite of the .param/.bin.

ncnn Mats have no batch dim: inputs must have batch 1, and the artifact's I/O bindings squeeze it.
pnnx names the blobs ``in0, in1, ...`` and ``out0, out1, ...`` in the ONNX graph's order.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends._subprocess import ToolRun, run_tool
from edgekit.backends.base import ArtifactTensor, Backend, ConvertContext
from edgekit.backends.graph_checks import asymmetric_average_pools
from edgekit.backends.ncnn.format import read_param
from edgekit.backends.ncnn.mixed import float_ncnn_layers, fp16_except, no_int8_layers
from edgekit.backends.ncnn.onnx_fixes import pnnx_ready_recurrent
from edgekit.backends.options import BackendOptions, option
from edgekit.errors import MissingDependency, OptionsError, StageError
from edgekit.fsutil import atomic_write_bytes, atomic_write_text
from edgekit.modelio import save_model
from edgekit.profiles import TargetProfile
from edgekit.types import Artifact, IOBinding, TensorSpec

WORKER = [sys.executable, "-m", "edgekit.backends.ncnn.worker"]
#: ONNX ops whose ncnn layers the int8 rewrite quantizes (Convolution*, InnerProduct, Gemm with constant weights)
INT8_OPS = frozenset({"Conv", "Gemm", "MatMul"})
NO_INT8_OPS = frozenset({"LSTM", "GRU", "RNN", "Attention"})
#: ncnn layers with weights that the int8 rewrite leaves float, like ncnn2int8 (no int8 kernel, or not worth one)
NO_INT8_LAYERS = frozenset({"MultiHeadAttention", "LSTM", "GRU", "RNN", "Embed", "Deconvolution", "DeconvolutionDepthWise"})
PNNX_DTYPES = {"float32": "f32", "float16": "f16", "float64": "f64", "int32": "i32", "int64": "i64", "int8": "i8", "uint8": "u8", "bool": "b"}
FP16_OFF = {"use_fp16_storage": False, "use_fp16_packed": False, "use_fp16_arithmetic": False, "use_bf16_storage": False}

# Measured with pnnx 20261020 / ncnn 1.0.20261020: pnnx either fails on these (If) or writes a
# layer ncnn has no implementation for (the rest), so the model could never load.
_NO_NCNN_LAYER = "pnnx converts it to a layer that the ncnn runtime does not implement"
UNSUPPORTED_OPS = {
    "If": "pnnx fails on ONNX If (data-dependent control flow)",
    "Loop": "ncnn has no Loop layer (control flow)",
    "Scan": "ncnn has no Scan layer (control flow)",
    "TopK": _NO_NCNN_LAYER,
    "NonZero": _NO_NCNN_LAYER + " (data-dependent output shape)",
    "Unique": _NO_NCNN_LAYER + " (data-dependent output shape)",
    "NonMaxSuppression": _NO_NCNN_LAYER,
    "CumSum": _NO_NCNN_LAYER,
    "ScatterND": _NO_NCNN_LAYER,
    "RoiAlign": _NO_NCNN_LAYER,
    "Det": _NO_NCNN_LAYER,
    "SequenceConstruct": "ncnn has no sequence types",
    "SequenceAt": "ncnn has no sequence types",
    "ConcatFromSequence": "ncnn has no sequence types",
    "SplitToSequence": "ncnn has no sequence types",
    "StringNormalizer": "ncnn has no string tensors",
    "TfIdfVectorizer": "ncnn has no string tensors",
}



def pnnx_executable() -> Path | None:
    """The pnnx binary shipped in the pnnx wheel (found without importing it: its package imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        for name in ("pnnx", "pnnx.exe"):
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which("pnnx", path=str(Path(sys.executable).parent)) or shutil.which("pnnx")
    return Path(found) if found else None




@dataclass(frozen=True)
class NcnnOptions(BackendOptions):
    label = "ncnn"
    docs = "docs/ncnn.md"

    num_threads: int = option(4, minimum=1, maximum=256)
    fp16_arithmetic: bool = option(True)  # fp16 builds: let ARMv8.2+ CPUs compute in fp16 (else fp16 storage only)
    vulkan: bool = option(False)  # run on the device's GPU through Vulkan where a driver answers


def run_logged(argv: list[str], cwd: Path, stage: str, tool: str, log_name: str) -> ToolRun:
    """Run a tool; on failure raise a StageError with its log tail and where to look next."""
    hint = (f"rerun with --keep-work to keep {log_name} and the intermediate files; "
            "'edgekit inspect MODEL --target android-ncnn' lists ops ncnn cannot take")
    return run_tool(argv, cwd, stage=stage, tool=tool, log_name=log_name, hint=hint)


class NcnnBackend(Backend):
    name = "ncnn"
    extra = "ncnn"
    runtime = "ncnn"
    unsupported_ops = UNSUPPORTED_OPS

    Options = NcnnOptions
    tool_distributions = ("pnnx", "ncnn")
    intermediate_outputs = "named"  # ncnn's Extractor returns any blob by name
    float_layer_precisions = frozenset({"int8", "fp16"})

    def check_tools(self) -> dict[str, str]:
        versions = super().check_tools()
        if pnnx_executable() is None:
            raise MissingDependency("the pnnx package is installed but its pnnx executable was not found", hint="pip install --force-reinstall pnnx")
        return versions

    def blocking_ops(self, model: Any) -> list[str]:
        found = super().blocking_ops(model)
        for nodes, what in ((_strided_slices(model), "Slice with steps other than 1 ({}): ncnn has no strided slice; pnnx writes "
                                                    "Tensor.slice, which the ncnn runtime does not implement"),
                            (asymmetric_average_pools(model), "AveragePool with unequal begin/end pads ({}): pnnx leaves it as an "
                                                               "AveragePool layer, which the ncnn runtime does not implement")):
            if nodes:
                found.append(what.format(", ".join(nodes[:5]) + ("..." if len(nodes) > 5 else "")))
        return found

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        options = self.options(profile)
        # a re-verified artifact has no build details: the same options again, never ncnn's defaults
        # (which turn fp16 arithmetic on wherever the CPU has it, an fp32 build included)
        return {"num_threads": options.num_threads,
                "ncnn_options": dict(artifact.details.get("ncnn_options") or self._ncnn_options(artifact.precision, options)),
                "vulkan": options.vulkan}

    def float_only_layers(self, model: Any, precision: str) -> dict[str, str]:
        """Recurrent layers: ncnn's int8 rewrite (like ncnn2int8) quantizes convolutions and inner products only, so
        they keep their float weights (attention that pnnx fuses to MultiHeadAttention and Embed likewise)."""
        if precision != "int8":
            return {}
        from edgekit.debug.graph import node_id

        return {node_id(n): f"ncnn int8 has no {n.op_type} kernel: its weights stay float" for n in model.graph.node if n.op_type in NO_INT8_OPS}

    def float_layer_ops(self, precision: str) -> frozenset[str] | None:
        return INT8_OPS if precision == "int8" else None

    def artifact_tensors(self, artifact: Artifact) -> list[ArtifactTensor]:
        layers = read_param(artifact.path.read_text())
        outputs = {b.artifact_name: b.onnx_name for b in artifact.outputs}
        return [ArtifactTensor(top, output_of=outputs.get(top)) for layer in layers if layer.type != "Input" for top in layer.tops]

    # --- conversion ------------------------------------------------------------------------

    def convert(self, ctx: ConvertContext) -> Artifact:
        versions = self.check_tools()
        _check_inputs(ctx.inputs)
        if ctx.precision not in ("fp32", "fp16", "int8"):
            raise OptionsError(f"the ncnn backend builds fp32, fp16 or int8, not '{ctx.precision}'")
        mixed = bool(ctx.float_layers) and ctx.precision in self.float_layer_precisions
        fp16_weights = ctx.precision == "fp16" and not mixed  # mixed fp16: fp32 from pnnx, fp16 written per layer here
        param, weights = self._pnnx(ctx, versions["pnnx"], fp16_weights)
        self._check_loadable(ctx, param, weights)
        extra: list[Path] = [weights]
        details: dict[str, Any] = {"tools": versions, "pnnx_fp16_weights": fp16_weights}
        float_layers: set[str] = set()
        if mixed:
            float_layers, details["float_layers"], details["float_layers_unmapped"] = float_ncnn_layers(
                self, ctx, self._artifact(ctx, param, [weights], "fp32", {}))
            details["ncnn_float_layers"] = sorted(float_layers)
        if ctx.precision == "fp16" and mixed:
            text, data = fp16_except(param, weights, float_layers)
            atomic_write_text(param, text)
            atomic_write_bytes(weights, data)
            self._check_loadable(ctx, param, weights)
        if ctx.precision == "int8":
            fp32_model = self._artifact(ctx, param, [weights], "fp32", {})
            fp32_model.path, fp32_model.extra_files = self._keep_fp32(ctx, param, weights)
            param, weights, table, summary = self._int8(ctx, param, weights, versions["ncnn"], float_layers)
            kept = {name: kind for name, kind in summary["kept_float_types"].items() if kind in NO_INT8_LAYERS}
            if kept:
                details.setdefault("float_layers", {}).update(no_int8_layers(self, ctx, fp32_model, kept))
            # Gemm layers alone leave the table empty: ncnn quantizes their inputs at run time
            extra = [weights, table] if table.read_text().strip() else [weights]
            details["int8"] = {"method": "kl", "calibration_table": table.name if len(extra) > 1 else None, **summary}
            self._check_loadable(ctx, param, weights)
        details["ncnn_options"] = self._ncnn_options(ctx.precision, ctx.options)
        return self._artifact(ctx, param, extra, ctx.precision, details)

    @staticmethod
    def _keep_fp32(ctx: ConvertContext, param: Path, weights: Path) -> tuple[Path, list[Path]]:
        """A copy of the fp32 model (the int8 rewrite replaces it), for mapping its layers to ONNX nodes."""
        folder = ctx.work_dir / "fp32"
        folder.mkdir(exist_ok=True)
        shutil.copyfile(param, folder / param.name)
        shutil.copyfile(weights, folder / weights.name)
        return folder / param.name, [folder / weights.name]

    def _artifact(self, ctx: ConvertContext, param: Path, extra: list[Path], precision: str, details: dict[str, Any]) -> Artifact:
        # pnnx names the blobs in0, in1, ... and out0, out1, ... in the ONNX graph's order
        return Artifact(path=param, backend=self.name, precision=precision, runtime=self.runtime,
                        inputs=[IOBinding(s.name, f"in{i}", squeeze_batch=True) for i, s in enumerate(ctx.inputs)],
                        outputs=[IOBinding(s.name, f"out{i}", squeeze_batch=True) for i, s in enumerate(ctx.outputs)],
                        extra_files=extra, details={**details, "ncnn_options": dict(FP16_OFF) if precision == "fp32" else details.get("ncnn_options", {})})

    @staticmethod
    def _ncnn_options(precision: str, options: NcnnOptions) -> dict[str, bool]:
        if precision == "fp16":
            arithmetic = options.fp16_arithmetic
            return {"use_fp16_storage": True, "use_fp16_packed": True, "use_fp16_arithmetic": arithmetic, "use_bf16_storage": False}
        flags = dict(FP16_OFF)
        if precision == "int8":
            flags["use_int8_inference"] = True
        return flags

    def _pnnx(self, ctx: ConvertContext, version: str, fp16_weights: bool) -> tuple[Path, Path]:
        started = time.perf_counter()
        folder = ctx.work_dir / "pnnx"
        folder.mkdir(exist_ok=True)
        model = folder / "model.onnx"
        fixed, rewritten = pnnx_ready_recurrent(ctx.model)
        if rewritten:
            save_model(fixed, model)
        else:
            _link_or_copy(ctx.model_path, model)
            for external in ctx.model_path.parent.glob(ctx.model_path.name + ".data"):
                _link_or_copy(external, folder / external.name)
        stem = ctx.artifact_stem
        param, weights = ctx.work_dir / f"{stem}.ncnn.param", ctx.work_dir / f"{stem}.ncnn.bin"
        shapes = ",".join(_shape_arg(spec) for spec in ctx.inputs)
        argv = [str(pnnx_executable()), model.name, f"inputshape={shapes}", f"fp16={int(fp16_weights)}",
                f"ncnnparam={param}", f"ncnnbin={weights}", "ncnnpy=model_ncnn.py",
                "pnnxparam=model.pnnx.param", "pnnxbin=model.pnnx.bin", "pnnxpy=model_pnnx.py", "pnnxonnx=model.pnnx.onnx"]
        ctx.log(f"pnnx: converting to ncnn ({'fp16' if fp16_weights else 'fp32'} weights)")
        run_logged(argv, folder, "convert", "pnnx", "pnnx.log")
        for path in (param, weights):
            if not path.is_file():
                raise StageError(f"convert: pnnx exited cleanly but did not write {path.name}",
                                 hint=f"see {folder / 'pnnx.log'} (kept with --keep-work)")
        ctx.record("convert", started, "pnnx", version, inputshape=shapes, fp16_weights=fp16_weights,
                   ncnn_options=self._ncnn_options(ctx.precision, ctx.options), recurrent_rewritten=rewritten)
        return param, weights

    def _check_loadable(self, ctx: ConvertContext, param: Path, weights: Path) -> None:
        """pnnx exits 0 even when it leaves ops ncnn cannot run; catch that here, not on the device."""
        check = run_logged([*WORKER, "check", str(param), str(weights)],
                           ctx.work_dir, "convert", "ncnn load check", "ncnn-check.log")
        result = check.last_json("convert: the ncnn load check")
        if result["unknown_types"]:
            raise StageError(f"convert: pnnx wrote layer types the ncnn runtime does not implement: {', '.join(result['unknown_types'])}",
                             hint="these come from ONNX ops ncnn cannot take; replace them in the model, or pick another target")
        if result["load_param"] != 0 or result["load_model"] != 0:
            raise StageError(f"convert: ncnn cannot load {param.name}/{weights.name} (load_param {result['load_param']}, load_model {result['load_model']})",
                             hint=f"see {ctx.work_dir / 'ncnn-check.log'} (kept with --keep-work)")
        layers = read_param(param.read_text())
        fed = {top for layer in layers if layer.type == "Input" for top in layer.tops}
        produced = {top for layer in layers for top in layer.tops}
        for kind, specs, available in (("input", ctx.inputs, fed), ("output", ctx.outputs, produced)):
            for k, spec in enumerate(specs):
                blob = f"{'in' if kind == 'input' else 'out'}{k}"
                if blob not in available:
                    raise StageError(f"convert: the ncnn model has no {kind} blob '{blob}' for ONNX {kind} '{spec.name}'")

    def _int8(self, ctx: ConvertContext, param: Path, weights: Path, version: str, float_layers: set[str]) -> tuple[Path, Path, Path, dict[str, Any]]:
        if ctx.calibration is None:
            raise StageError("quantize: int8 needs calibration data")  # the pipeline checks this earlier
        started = time.perf_counter()
        calib = ctx.work_dir / "calibration_ncnn.npz"
        samples = ctx.calibration
        # inputs have batch 1 (checked in convert) and ncnn Mats have no batch dim: drop it from every sample
        np.savez(calib, **{f"i{k}": np.stack([samples.sample(i)[spec.name][0] for i in range(samples.count)]) for k, spec in enumerate(ctx.inputs)})
        stem = ctx.artifact_stem
        out_param, out_bin, table = (ctx.work_dir / f"{stem}.int8.param", ctx.work_dir / f"{stem}.int8.bin", ctx.work_dir / f"{stem}.table")
        ctx.log(f"ncnn int8: KL calibration over {samples.count} samples, int8 rewrite")
        run = run_logged([*WORKER, "int8", str(param), str(weights), "--calib", str(calib),
                          "--inputs", ",".join(f"in{k}" for k in range(len(ctx.inputs))), "--out-param", str(out_param),
                          "--out-bin", str(out_bin), "--out-table", str(table), "--float-layers", ",".join(sorted(float_layers))],
                         ctx.work_dir, "quantize", "edgekit ncnn int8", "ncnn-int8.log")
        summary = run.last_json("quantize: edgekit ncnn int8")
        if not summary["quantized"]:
            raise StageError("quantize: the model has no Convolution, InnerProduct or constant-weight Gemm layer for ncnn int8",
                             hint="use --precision fp16 for this model")
        final_param, final_bin = ctx.work_dir / f"{stem}.ncnn.param", ctx.work_dir / f"{stem}.ncnn.bin"
        os.replace(out_param, final_param)
        os.replace(out_bin, final_bin)
        ctx.record("quantize", started, "edgekit-ncnn-int8", version, mode="int8",
                   calibration_samples=summary["samples"], method="kl", quantized_layers=len(summary["quantized"]),
                   float_layers_with_weights=len(summary["kept_float"]), fallback_float_layers=sorted(float_layers))
        return final_param, final_bin, table, summary


def _strided_slices(model: Any) -> list[str]:
    """Slice nodes whose constant ``steps`` input has a step other than 1 (YOLOX's Focus stem: x[..., ::2, ::2])."""
    from onnx import numpy_helper

    from edgekit.modelio import constant_tensors

    constants = constant_tensors(model)
    found = []
    for node in model.graph.node:
        if node.op_type == "Slice" and len(node.input) > 4 and node.input[4] in constants:
            steps = numpy_helper.to_array(constants[node.input[4]])
            if np.any(np.abs(steps) != 1):
                found.append(node.name or "<unnamed>")
    return found


def _check_inputs(inputs: list[TensorSpec]) -> None:
    for spec in inputs:
        if not spec.shape or spec.shape[0] != 1:
            raise OptionsError(f"ncnn runs one sample at a time (its Mats have no batch dim), but input '{spec.name}' has shape {list(spec.shape)}",
                               hint=f"export the model with batch 1, or pass --input-shape {spec.name}=1,...")
        if len(spec.shape) > 5:
            raise OptionsError(f"ncnn Mats have at most 4 dims besides the batch; input '{spec.name}' has shape {list(spec.shape)}")


def _shape_arg(spec: TensorSpec) -> str:
    return "[" + ",".join(str(d) for d in spec.shape) + "]" + PNNX_DTYPES.get(spec.dtype, "f32")


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
