"""TensorRT backend (Jetson and other NVIDIA GPUs): a serialized engine built where it will run.

An engine is tied to the GPU architecture and the TensorRT version it was built with, so edgekit never
builds a Jetson engine on a host that does not match it: a profile names its GPU (``[hardware]
compute_capability``), and a local build on a GPU of another compute capability is refused unless
``--allow-foreign-gpu``, in which case the report names both GPUs. The engine is built by the remote builder
(``edgekit/remote/trt_builder.py``, shipped in edgekit's zipapp), which runs either on this host (when it has
a CUDA GPU and ``tensorrt``) or on the device through the transport (``--device``), falling back to
``trtexec`` there. Without either, the build stops with a clear error and builds nothing, after producing
and checking the int8 QDQ model where one was asked for (that part needs no GPU).

int8 is explicit quantization: :mod:`edgekit.qdq` inserts Q/DQ nodes from the calibration data and
checks the QDQ model with onnxruntime before TensorRT sees it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from edgekit._lazy import version_of
from edgekit.backends.base import Backend, ConvertContext, ShapeRange
from edgekit.backends.tensorrt.build import (
    REMOTE_TIMING_DIR,
    build_engine,
    dynamic_inputs,
    foreign_gpu,
    host_build_problem,
    host_identity,
    shape_args,
    timing_cache_dir,
    trtexec_command,
)
from edgekit.backends.tensorrt.int8 import quantize as quantize_int8
from edgekit.backends.tensorrt.options import TrtOptions
from edgekit.errors import BackendUnavailable, OptionsError, StageError
from edgekit.fsutil import atomic_copy
from edgekit.profiles import TargetProfile
from edgekit.remote import cuda
from edgekit.types import Artifact, IOBinding


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"
    runtime = "tensorrt"
    Options = TrtOptions
    supports_shape_ranges = True
    float_layer_precisions = frozenset({"int8"})  # nodes_to_exclude in the QDQ pass
    unsupported_ops = {
        "Loop": "TensorRT's ONNX parser takes Loop only in limited forms; unroll it before export",
        "SequenceConstruct": "sequence types are not supported by TensorRT",
        "SequenceAt": "sequence types are not supported by TensorRT",
        "StringNormalizer": "string tensors are not supported by TensorRT",
        "TfIdfVectorizer": "not supported by TensorRT's ONNX parser",
    }

    def check_tools(self) -> dict[str, str]:
        # Engines may be built on the device, so a host without TensorRT is not an error here.
        return {"onnxruntime": version_of("onnxruntime") or "missing",
                "tensorrt": version_of("tensorrt") or "not installed on this host"}

    def build_host_identity(self) -> dict[str, Any]:
        return host_identity(cuda.cuda_devices(), version_of("tensorrt"), cuda.driver_version())

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        engine = artifact.details.get("engine", {})
        return {"engine_meta": {k: engine.get(k) for k in ("tensorrt_version", "gpu", "compute_capability", "precision", "dla_core")}}

    def convert(self, ctx: ConvertContext) -> Artifact:
        options: TrtOptions = ctx.options
        transport = ctx.build_host.transport
        ranges: dict[str, ShapeRange] = dict(ctx.build_host.shape_ranges)
        remote = transport is not None and transport.where == "device"
        foreign = None if remote else self.check_gpu(ctx, options, cuda.first_device())  # before any work: refuse quickly
        onnx_path, shapes = self._engine_onnx(ctx, ranges)
        details: dict[str, Any] = {"dynamic_shapes": {k: [list(d) for d in v] for k, v in ranges.items()}}
        if ctx.precision == "int8":
            quantized = quantize_int8(ctx, onnx_path, options)
            onnx_path, details["qdq"] = quantized.path, quantized.detail
            if quantized.float_layers:
                details["float_layers"] = quantized.float_layers
            if quantized.detail.get("fallback"):
                details["fallback"] = quantized.detail["fallback"]

        problem = None if remote else host_build_problem()
        if problem is not None:
            raise self._cannot_build(ctx, problem, onnx_path, options, shapes)

        from edgekit.transport.local import LocalTransport

        started = time.perf_counter()
        where = transport.device_name if remote and transport is not None else "host"
        ctx.log(f"TensorRT: building the {ctx.precision} engine on {where}")
        engine, meta = build_engine(transport if remote and transport is not None else LocalTransport(python=sys.executable),
                                    onnx_path, ctx.precision, options, shapes, ctx.work_dir, f"{ctx.artifact_stem}.engine",
                                    REMOTE_TIMING_DIR if remote else str(timing_cache_dir()))
        meta["built_on"] = where
        details["engine"] = meta
        # the report names both GPUs: the one the engine was built on and the one the target profile is for
        ctx.record("engine", started, meta.get("builder", "tensorrt"), meta.get("tensorrt_version"),
                   built_on=where, gpu=meta.get("gpu"), compute_capability=meta.get("compute_capability"),
                   target_gpu=options.gpu, target_compute_capability=options.compute_capability, foreign_gpu=foreign,
                   precision=ctx.precision, dla_core=meta.get("dla_core"), timing_cache_hit=meta.get("timing_cache_hit"),
                   engine_bytes=meta.get("engine_bytes"))
        identity = [IOBinding(spec.name, spec.name) for spec in ctx.inputs]  # TensorRT keeps the ONNX tensor names
        return Artifact(path=engine, backend=self.name, precision=ctx.precision, runtime=self.runtime,
                        inputs=identity, outputs=[IOBinding(spec.name, spec.name) for spec in ctx.outputs], details=details)

    # --- steps -------------------------------------------------------------------------------

    @staticmethod
    def check_gpu(ctx: ConvertContext, options: TrtOptions, device: dict[str, Any]) -> str | None:
        """Refuse a local build on ``device`` (this host's GPU) when it is not the target's, unless allowed;
        returns why it is foreign, or None."""
        foreign = foreign_gpu(options, device)
        if foreign and not ctx.build_host.allow_foreign_gpu:
            raise OptionsError(f"target '{ctx.profile.name}': {foreign}, so it would not run on the target. Nothing was built.",
                               hint="build on the device with --device NAME, or pass --allow-foreign-gpu to build an engine for this "
                               "host's GPU anyway (the report then names both GPUs)")
        return foreign

    @staticmethod
    def _engine_onnx(ctx: ConvertContext, ranges: dict[str, ShapeRange]) -> tuple[Path, list[str]]:
        """The ONNX model TensorRT gets: the simplified, shape-fixed one, or for shape ranges the
        source model with its dynamic dims (the simplifier would have baked the OPT shape in)."""
        if not ranges:
            return ctx.model_path, []
        from edgekit.modelio import load_model, save_model

        source = ctx.source_path
        if source is None:
            raise StageError("convert: shape ranges need the source model, which this pipeline did not pass on")
        loaded = load_model(source)
        shapes = shape_args(ranges, dynamic_inputs(loaded.proto))
        # saved again so that external data, if any, sits beside it under the name the builder uploads
        return save_model(loaded.proto, ctx.work_dir / f"{source.stem}.dynamic.onnx"), shapes

    @staticmethod
    def _cannot_build(ctx: ConvertContext, problem: str, onnx_path: Path, options: TrtOptions, shapes: list[str]) -> BackendUnavailable:
        kept = ""
        source = ctx.source_path
        onnx_name = source.name if source is not None else "MODEL.onnx"
        out_dir = ctx.build_host.out_dir
        if ctx.precision == "int8" and out_dir is not None:
            kept_path = Path(out_dir) / onnx_path.name
            atomic_copy(onnx_path, kept_path)
            onnx_name = kept_path.name
            qdq = next((s for s in ctx.stages if s.name == "quantize"), None)
            sqnr = f" (min SQNR {qdq.detail['min_sqnr_db']:.1f} dB, min cosine {qdq.detail['min_cosine']:.4f})" if qdq else ""
            floats = qdq.detail.get("float_layers") if qdq else None
            fallback = f", with {len(floats)} nodes kept in float by per-layer fallback ({', '.join(floats[:5])}{'...' if len(floats) > 5 else ''})" if floats else ""
            kept = f" The int8 QDQ model passed its onnxruntime check{sqnr}{fallback} and was written to {kept_path}."
        command = trtexec_command(onnx_name, f"{ctx.artifact_stem}.engine", ctx.precision, options, shapes)
        return BackendUnavailable(
            f"target '{ctx.profile.name}': a TensorRT engine must be built on the GPU that will run it, and this host cannot build one: "
            f"{problem}. No engine was built and nothing was verified.{kept}",
            hint=f"build on the device with --device NAME (it uploads the model and builds with the device's TensorRT), "
            f"or on a matching GPU host after pip install 'edgekit[tensorrt]', or by hand on the device: {command}",
        )
