"""Core ML backend (iPhone, iPad, Mac): an ML Program ``.mlpackage`` built on any host.

coremltools 9 has no ONNX frontend, so the route is ONNX -> PyTorch (onnx2torch) -> torch.export
(torch.jit.trace where export fails) -> ``coremltools.convert(convert_to="mlprogram")``. The PyTorch
module is checked against onnxruntime on the same inputs before coremltools sees it; that check runs
everywhere, while the package itself runs only on Apple systems (the device runner says so on Linux).

Precisions: fp32 and fp16 compute precision; "int8" compresses weights after conversion, either linear
int8 (default, no calibration needed) or an n-bit palettization (``int8_weights = "palettize"``), and,
with ``int8_activations = true`` and calibration data, quantizes activations too (iOS 17+, on a Mac:
coremltools calibrates by running the model).
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.backends.base import Backend, ConvertContext
from edgekit.backends.coreml import torch_leg
from edgekit.backends.coreml.layers import weight_constants
from edgekit.backends.coreml.options import CoreMLOptions
from edgekit.backends.coreml.package import coreml_name, describe_package, import_coremltools, quiet_tools
from edgekit.backends.graph_checks import asymmetric_average_pools
from edgekit.calibration import SampleSet, random_samples
from edgekit.errors import BackendUnavailable, ProfileError, StageError, tail
from edgekit.fsutil import sha256_file, size_of
from edgekit.profiles import TargetProfile
from edgekit.reference import run_reference
from edgekit.types import Artifact, IOBinding, TensorSpec

CHECK_SAMPLES = 4
ACTIVATION_CALIBRATION_SAMPLES = 32


# --- backend ----------------------------------------------------------------------------------


class CoreMLBackend(Backend):
    name = "coreml"
    extra = "coreml"
    runtime = "coreml"
    Options = CoreMLOptions
    tool_distributions = ("coremltools", "onnx2torch", "torch")
    float_layer_precisions = frozenset({"int8"})  # weights left uncompressed through op_name_configs

    def needs_calibration(self, profile: TargetProfile, precision: str) -> bool:
        """int8 weights need none; only int8 activations are calibrated."""
        return precision == "int8" and self.options(profile).int8_activations

    def blocking_ops(self, model: Any) -> list[str]:
        found = torch_leg.describe_blocking(torch_leg.blocking_nodes(model))
        pools = asymmetric_average_pools(model)
        if pools:
            found.append(f"AveragePool with unequal begin/end pads ({', '.join(pools[:5])}{'...' if len(pools) > 5 else ''}): "
                         "onnx2torch does not implement it, so the Core ML route stops here")
        return found

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        options = self.options(profile)
        return {"compute_units": options.compute_units, "image_inputs": artifact.details.get("image_inputs", {})}

    # --- conversion ------------------------------------------------------------------------

    def convert(self, ctx: ConvertContext) -> Artifact:
        versions = self.check_tools()
        options: CoreMLOptions = ctx.options
        import_coremltools()
        if options.int8_activations and ctx.precision == "int8":
            self._check_activation_host(ctx)
        started = time.perf_counter()
        log = io.StringIO()
        input_names = [spec.name for spec in ctx.inputs]
        output_names = [spec.name for spec in ctx.outputs]
        samples = ctx.calibration.head(min(CHECK_SAMPLES, ctx.calibration.count)) if ctx.calibration else random_samples(ctx.inputs, CHECK_SAMPLES, seed=0)
        references = run_reference(ctx.model, samples)
        tolerance = ctx.profile.tolerance_for("fp32")
        ctx.log("onnx2torch: converting to a PyTorch module")
        with quiet_tools(log):
            module = torch_leg.to_torch(ctx.model)
            checks = [torch_leg.check_against_reference("onnx2torch", module, input_names, output_names, samples, references, tolerance)]
            torch_leg.require_passed(checks[0], tolerance)
            program, how, export_error = torch_leg.export(module, input_names, samples.sample(0))
            checks.append(torch_leg.check_against_reference(how, torch_leg.program_module(program, how), input_names, output_names,
                                                            samples, references, tolerance))
            torch_leg.require_passed(checks[1], tolerance)
        ctx.log(f"coremltools: converting to an ML Program ({options.deployment_target})")
        ml, image_inputs, bindings = self._ct_convert(ctx, options, program, log)
        intermediate = {"tolerance": tolerance.to_dict(), "input_source": samples.source, "checks": [c.to_dict() for c in checks],
                        "passed": all(c.passed for c in checks)}
        ctx.record("convert", started, "coremltools", versions["coremltools"], route=f"onnx2torch {versions['onnx2torch']} -> {how} -> coremltools",
                   capture=how, export_fallback_reason=export_error, deployment_target=options.deployment_target,
                   intermediate_check=intermediate)

        started = time.perf_counter()
        ml, compression = self._compress(ctx, options, ml, bindings[0], log)
        self._set_metadata(ml, ctx, options, compression, bindings, image_inputs)
        target = ctx.work_dir / f"{ctx.artifact_stem}.mlpackage"
        with quiet_tools(log):
            ml.save(str(target))
        (ctx.work_dir / "coremltools.log").write_text(log.getvalue())
        package_bytes = size_of(target)
        ctx.record("quantize", started, "coremltools", versions["coremltools"], mode=ctx.precision, package_bytes=package_bytes, **compression)
        return Artifact(path=target, backend=self.name, precision=ctx.precision, runtime=self.runtime,
                        inputs=bindings[0], outputs=bindings[1],
                        details={"intermediate_check": intermediate, "package_bytes": package_bytes, "compression": compression,
                                 "float_layers": compression.pop("float_layers", {}), "float_layers_unmapped": compression.pop("float_layers_unmapped", []),
                                 "image_inputs": image_inputs, "deployment_target": options.deployment_target,
                                 "compute_units": options.compute_units, "tools": versions})

    @staticmethod
    def _check_activation_host(ctx: ConvertContext) -> None:
        if ctx.calibration is None:
            raise StageError("quantize: int8 activations need calibration data")  # the pipeline checks this earlier
        if sys.platform != "darwin":
            raise BackendUnavailable(
                f"target '{ctx.profile.name}' quantizes activations (backend_options.int8_activations = true), and coremltools "
                "calibrates activations by running the model, which needs macOS",
                hint="build on a Mac, or set int8_activations = false for int8 weights only (no calibration needed)")

    def _ct_convert(self, ctx: ConvertContext, options: CoreMLOptions, program: Any, log: io.StringIO) -> tuple[Any, dict[str, Any], tuple[list[IOBinding], list[IOBinding]]]:
        ct = import_coremltools()
        taken: set[str] = set()
        in_names = [coreml_name(spec.name, taken) for spec in ctx.inputs]
        out_names = [coreml_name(spec.name, taken) for spec in ctx.outputs]
        by_onnx_name = self._image_inputs(ctx, options) if options.image_input else {}
        image_inputs: dict[str, dict[str, Any]] = {}  # by Core ML name, for the runner and the metadata
        ct_inputs = []
        for spec, name in zip(ctx.inputs, in_names, strict=True):
            if spec.name in by_onnx_name:
                image = image_inputs[name] = by_onnx_name[spec.name]
                layout = {"RGB": ct.colorlayout.RGB, "BGR": ct.colorlayout.BGR, "GRAY": ct.colorlayout.GRAYSCALE}[image["color"]]
                ct_inputs.append(ct.ImageType(name=name, shape=spec.shape, scale=image["scale"], bias=image["bias"], color_layout=layout))
            else:
                dtype = np.float32 if np.dtype(spec.dtype).kind == "f" else np.int32
                ct_inputs.append(ct.TensorType(name=name, shape=spec.shape, dtype=dtype))
        ct_outputs = [ct.TensorType(name=name, dtype=np.float32) if np.dtype(spec.dtype).kind == "f" else ct.TensorType(name=name)
                      for spec, name in zip(ctx.outputs, out_names, strict=True)]
        precision = ct.precision.FLOAT32 if ctx.precision == "fp32" else ct.precision.FLOAT16
        try:
            with quiet_tools(log):
                ml = ct.convert(program, inputs=ct_inputs, outputs=ct_outputs, convert_to="mlprogram",
                                minimum_deployment_target=getattr(ct.target, options.deployment_target),
                                compute_precision=precision, compute_units=getattr(ct.ComputeUnit, options.compute_units))
        except Exception as exc:
            raise StageError(f"convert: coremltools could not convert the PyTorch program: {type(exc).__name__}: {tail(str(exc), 8)}",
                             hint="an op that onnx2torch took may have no Core ML equivalent; rerun with --keep-work for coremltools.log") from None
        spec = ml.get_spec()
        got_in = [i.name for i in spec.description.input]
        got_out = [o.name for o in spec.description.output]
        if got_in != in_names or len(got_out) != len(out_names):
            raise StageError(f"convert: the Core ML package has inputs {got_in} and outputs {got_out}, expected {in_names} and {out_names}")
        bindings = ([IOBinding(s.name, n) for s, n in zip(ctx.inputs, got_in, strict=True)],
                    [IOBinding(s.name, n) for s, n in zip(ctx.outputs, got_out, strict=True)])
        return ml, image_inputs, bindings

    @staticmethod
    def _image_inputs(ctx: ConvertContext, options: CoreMLOptions) -> dict[str, dict[str, Any]]:
        """Image inputs (CVPixelBuffer on iOS) for 4-D 1- or 3-channel inputs, with the profile's preprocessing.

        Core ML computes ``scale * pixel + bias[c]``; edgekit's preprocessing is ``(pixel * scale - mean[c]) / std[c]``,
        so one scale for all channels means the profile's std values must be equal.
        """
        pre = ctx.profile.preprocessing
        where = ctx.profile.source or ctx.profile.name
        if pre.layout != "NCHW":
            raise ProfileError(f"{where}: backend_options.image_input needs preprocessing.layout = 'NCHW' (Core ML image inputs are NCHW)")
        found: dict[str, dict[str, Any]] = {}
        for spec in ctx.inputs:
            if len(spec.shape) != 4 or spec.shape[0] != 1 or spec.shape[1] not in (1, 3) or np.dtype(spec.dtype).kind != "f":
                continue
            channels = int(spec.shape[1])  # type: ignore[arg-type]
            color = "GRAY" if channels == 1 else pre.color
            if (channels == 1) != (color == "GRAY"):
                raise ProfileError(f"{where}: input '{spec.name}' has {channels} channels but preprocessing.color is {pre.color}")
            mean = list(pre.mean[:channels]) if len(pre.mean) >= channels else [pre.mean[0]] * channels
            std = list(pre.std[:channels]) if len(pre.std) >= channels else [pre.std[0]] * channels
            if max(std) - min(std) > 1e-9:
                raise ProfileError(f"{where}: Core ML image inputs use one scale for all channels, but preprocessing.std is {list(pre.std)}",
                                   hint="use equal std values, or set backend_options.image_input = false and normalize in the app")
            found[spec.name] = {"scale": pre.scale / std[0], "bias": [-m / s for m, s in zip(mean, std, strict=True)], "color": color}
        if not found:
            raise ProfileError(f"{where}: backend_options.image_input is true, but the model has no 1x1xHxW or 1x3xHxW float input",
                               hint="set image_input = false for this model")
        return found

    def _compress(self, ctx: ConvertContext, options: CoreMLOptions, ml: Any, inputs: list[IOBinding], log: io.StringIO) -> tuple[Any, dict[str, Any]]:
        if ctx.precision != "int8":
            return ml, {"weights": "float16" if ctx.precision == "fp16" else "float32", "activations": "float"}
        ct = import_coremltools()
        cto = ct.optimize.coreml
        summary: dict[str, Any] = {"weight_threshold": options.weight_threshold}
        try:
            with quiet_tools(log):
                if options.int8_activations:
                    ml = self._quantize_activations(ctx, cto, ml, inputs)
                    summary.update(activations="int8", calibration_samples=min(ctx.calibration.count, ACTIVATION_CALIBRATION_SAMPLES))  # type: ignore[union-attr]
                else:
                    summary["activations"] = "float"
                skip = self._float_weights(ctx, ml, summary)
                if options.int8_weights == "linear":
                    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=options.weight_threshold),
                        op_name_configs=skip)
                    ml = cto.linear_quantize_weights(ml, config=config)
                    summary.update(weights="int8 linear symmetric per-channel")
                else:
                    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
                        mode="kmeans", nbits=options.palettize_bits, weight_threshold=options.weight_threshold), op_name_configs=skip)
                    ml = cto.palettize_weights(ml, config=config)
                    summary.update(weights=f"palettized {options.palettize_bits}-bit (k-means lookup table)")
        except Exception as exc:
            raise StageError(f"quantize: coremltools weight compression failed: {type(exc).__name__}: {tail(str(exc), 8)}",
                             hint="try int8_weights = 'linear', or --precision fp16") from None
        summary["compressed_ops"] = self._count_compressed(ml)
        if summary["compressed_ops"] == 0:
            summary["note"] = f"no weight tensor has {options.weight_threshold}+ elements, so all weights stayed float; lower backend_options.weight_threshold"
        return ml, summary

    def _float_weights(self, ctx: ConvertContext, ml: Any, summary: dict[str, Any]) -> dict[str, None]:
        """op_name_configs leaving the weights of ``ctx.float_layers`` uncompressed (per-layer fallback)."""
        if not ctx.float_layers:
            return {}
        consts, summary["float_layers"], summary["float_layers_unmapped"] = weight_constants(ml._mil_program, ctx.model, ctx.float_layers)
        return dict.fromkeys(consts)

    @staticmethod
    def _quantize_activations(ctx: ConvertContext, cto: Any, ml: Any, inputs: list[IOBinding]) -> Any:
        calibration: SampleSet = ctx.calibration  # type: ignore[assignment]
        data = [{b.artifact_name: calibration.sample(i)[b.onnx_name].astype(np.float32) for b in inputs}
                for i in range(min(calibration.count, ACTIVATION_CALIBRATION_SAMPLES))]
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        return cto.linear_quantize_activations(ml, config, data)

    @staticmethod
    def _count_compressed(ml: Any) -> int:
        spec = ml.get_spec()
        main = spec.mlProgram.functions["main"]
        return sum(1 for op in main.block_specializations[main.opset].operations if op.type.startswith("constexpr_"))

    @staticmethod
    def _set_metadata(ml: Any, ctx: ConvertContext, options: CoreMLOptions, compression: dict[str, Any],
                      bindings: tuple[list[IOBinding], list[IOBinding]], image_inputs: dict[str, Any]) -> None:
        source = ctx.source_path or ctx.model_path
        onnx_version = int(getattr(ctx.model, "model_version", 0) or 0)
        ml.author = options.author
        ml.version = str(options.model_version or "") or (str(onnx_version) if onnx_version else "1")
        ml.short_description = f"{source.name} built by edgekit {__version__} for target '{ctx.profile.name}' ({ctx.precision})"
        meta = ml.user_defined_metadata
        meta["edgekit.version"] = __version__
        meta["edgekit.target"] = ctx.profile.name
        meta["edgekit.precision"] = ctx.precision
        meta["edgekit.weights"] = str(compression.get("weights"))
        meta["edgekit.activations"] = str(compression.get("activations"))
        meta["edgekit.source_model"] = source.name
        meta["edgekit.source_sha256"] = sha256_file(source) if source.is_file() else ""
        if image_inputs:
            # What an app must know to feed pixels: Core ML computes scale * pixel + bias[channel].
            meta["edgekit.image_inputs"] = json.dumps(image_inputs, sort_keys=True)
        specs: dict[str, TensorSpec] = {s.name: s for s in (*ctx.inputs, *ctx.outputs)}
        for binding in bindings[0]:
            ml.input_description[binding.artifact_name] = f"ONNX input '{binding.onnx_name}', shape {list(specs[binding.onnx_name].shape)}"
        for binding in bindings[1]:
            ml.output_description[binding.artifact_name] = f"ONNX output '{binding.onnx_name}', shape {list(specs[binding.onnx_name].shape)}"


__all__ = ["CoreMLBackend", "CoreMLOptions", "coreml_name", "describe_package"]
