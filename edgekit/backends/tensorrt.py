"""TensorRT backend (Jetson and other NVIDIA GPUs): a serialized engine built where it will run.

An engine is tied to the GPU architecture and the TensorRT version it was built with, so edgekit never
builds a Jetson engine on a host that does not match it. The engine is built by ``_trt_builder.py``,
a self-contained script that runs either on this host (when it has a CUDA GPU and ``tensorrt``) or on
the device through the transport (``--device``), falling back to ``trtexec`` there. Without either,
the build stops with a clear error and builds nothing, after producing and checking the int8 QDQ
model where one was asked for (that part needs no GPU).

int8 is explicit quantization: :mod:`edgekit.qdq` inserts Q/DQ nodes from the calibration data and
checks the QDQ model with onnxruntime before TensorRT sees it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit._lazy import version_of
from edgekit.backends import _trt_builder as builder_script
from edgekit.backends.base import Backend, ConvertContext
from edgekit.errors import BackendUnavailable, DeviceError, OptionsError, ProfileError, StageError, VerificationFailed, script_error
from edgekit.fsutil import atomic_copy
from edgekit.profiles import TargetProfile
from edgekit.transport.base import Transport
from edgekit.types import Artifact, IOBinding

BUILDER_SCRIPT = Path(builder_script.__file__).resolve()
BUILDER_NAME = "edgekit_trt_builder.py"
REMOTE_MODEL = "model.onnx"  # fixed names on the build machine: the user's file names never reach a command line
REMOTE_ENGINE = "model.engine"
REMOTE_META = "build.json"
REMOTE_TIMING_DIR = "~/.cache/edgekit/trt-timing"
QDQ_CHECK_SAMPLES = 8
OPTION_KEYS = {"workspace_mib", "builder_optimization_level", "timing_cache", "dla_core", "gpu_fallback", "int8_op_types",
               "int8_exclude_nodes", "calibration_method", "build_timeout_s", "builder"}

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def timing_cache_dir() -> Path:
    """Where local builds keep TensorRT timing caches ($EDGEKIT_TRT_TIMING_DIR, default ~/.cache/edgekit/trt-timing)."""
    return Path(os.environ.get("EDGEKIT_TRT_TIMING_DIR") or Path.home() / ".cache" / "edgekit" / "trt-timing")


# --- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtOptions:
    workspace_mib: int | None = None
    opt_level: int | None = None
    timing_cache: bool = True
    dla_core: int | None = None
    gpu_fallback: bool = False
    int8_op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    int8_exclude_nodes: tuple[str, ...] = ()
    calibration_method: str = "minmax"
    build_timeout_s: float = 3600.0
    builder: str = "auto"  # "auto": Python API, else trtexec; "python": API only; "trtexec": trtexec only

    @classmethod
    def from_profile(cls, profile: TargetProfile) -> TrtOptions:
        table = profile.backend_options

        def fail(key: str, problem: str) -> ProfileError:
            return ProfileError(f"{profile.source or profile.name}: key 'backend_options.{key}': {problem}",
                                hint="see docs/tensorrt.md for the TensorRT backend options")

        for key in table:
            if key not in OPTION_KEYS:
                raise fail(key, f"unknown TensorRT option; allowed: {', '.join(sorted(OPTION_KEYS))}")

        def integer(key: str, low: int, high: int | None = None) -> int | None:
            value = table.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
                raise fail(key, f"must be an integer in [{low}, {high if high is not None else '...'}]; got {value!r}")
            return value

        def flag(key: str, default: bool) -> bool:
            value = table.get(key, default)
            if not isinstance(value, bool):
                raise fail(key, f"must be true or false; got {value!r}")
            return value

        def strings(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = table.get(key, list(default))
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise fail(key, f"must be a list of non-empty strings; got {value!r}")
            return tuple(value)

        method = table.get("calibration_method", "minmax")
        if method not in ("minmax", "entropy", "percentile"):
            raise fail("calibration_method", f"must be one of minmax, entropy, percentile; got {method!r}")
        builder = table.get("builder", "auto")
        if builder not in ("auto", "python", "trtexec"):
            raise fail("builder", f"must be one of auto, python, trtexec; got {builder!r}")
        timeout = table.get("build_timeout_s", 3600)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise fail("build_timeout_s", f"must be a positive number of seconds; got {timeout!r}")
        dla_core = integer("dla_core", 0, 15)
        dla_cores = profile.hardware.get("dla_cores")
        if dla_core is not None and isinstance(dla_cores, int) and dla_core >= dla_cores:
            raise fail("dla_core", f"is {dla_core}, but [hardware] dla_cores says this device has {dla_cores}")
        op_types = strings("int8_op_types", cls.int8_op_types)
        if not op_types:
            raise fail("int8_op_types", "must name at least one op type")
        return cls(workspace_mib=integer("workspace_mib", 1, 1 << 20), opt_level=integer("builder_optimization_level", 0, 5),
                   timing_cache=flag("timing_cache", True), dla_core=dla_core, gpu_fallback=flag("gpu_fallback", False),
                   int8_op_types=op_types, int8_exclude_nodes=strings("int8_exclude_nodes", ()),
                   calibration_method=method, build_timeout_s=float(timeout), builder=builder)


# --- shapes ---------------------------------------------------------------------------------


def parse_input_shapes(values: tuple[str, ...] | list[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, ShapeRange]]:
    """--input-shape values -> (fixed shapes, ranges). ``NAME=MIN:OPT:MAX`` gives a range and fixes NAME to OPT
    for everything that needs one shape (reference run, verification); other forms go to ``parse_shape``."""
    from edgekit.modelio import parse_shape

    shapes: dict[str, tuple[int, ...]] = {}
    ranges: dict[str, ShapeRange] = {}
    for text in values:
        name, _, spec = text.rpartition("=")
        if name and spec.count(":") >= 1:
            try:
                parsed = builder_script.parse_shape_spec(text)
            except ValueError as exc:
                raise OptionsError(f"--input-shape {text!r}: {exc}", hint="a range is NAME=MIN:OPT:MAX, e.g. images=1x3x224x224:4x3x224x224:8x3x224x224") from None
            low, opt, high = (tuple(d) for d in parsed[1:])
            shapes[name] = opt
            ranges[name] = (low, opt, high)
        else:
            key, dims = parse_shape(text)
            shapes[key] = dims
    return shapes, ranges


def _dynamic_inputs(model: Any) -> dict[str, list[int | str | None]]:
    found = {}
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            found[value.name] = dims
    return found


def shape_args(ranges: dict[str, ShapeRange], dynamic: dict[str, list]) -> list[str]:
    """Builder --shape values for the inputs that are dynamic in the ONNX handed to TensorRT."""
    unknown = [name for name in ranges if name not in dynamic]
    if unknown:
        raise OptionsError(f"--input-shape gives a MIN:OPT:MAX range for {', '.join(unknown)}, but that input has fixed dims in the model",
                           hint="give a range only for inputs with dynamic dims; use NAME=DIMS for the others")
    missing = [name for name in dynamic if name not in ranges]
    if missing:
        raise OptionsError(f"inputs {', '.join(missing)} are dynamic in the model; a dynamic TensorRT engine needs a range for each",
                           hint=f"add --input-shape {missing[0]}=MIN:OPT:MAX (e.g. 1x3x224x224:4x3x224x224:8x3x224x224)")
    args = []
    for name, (low, opt, high) in ranges.items():
        if len(low) != len(dynamic[name]):
            raise OptionsError(f"--input-shape {name}: gives rank {len(low)}, the input has rank {len(dynamic[name])} {dynamic[name]}")
        for i, (declared, a, c) in enumerate(zip(dynamic[name], low, high, strict=True)):
            if isinstance(declared, int) and declared > 0 and not (a == declared == c):
                raise OptionsError(f"--input-shape {name}: dim {i} is fixed to {declared} in the model; its range must be {declared}:{declared}:{declared}")
        args.append(f"{name}=" + ":".join("x".join(str(d) for d in dims) for dims in (low, opt, high)))
    return args


# --- building --------------------------------------------------------------------------------


def host_build_problem() -> str | None:
    """Why this host cannot build engines, or None when it can (CUDA GPU and tensorrt importable)."""
    problems = []
    if importlib.util.find_spec("tensorrt") is None:
        problems.append("the 'tensorrt' Python package is not installed")
    if not builder_script.cuda_devices():
        problems.append("there is no usable CUDA GPU (libcuda not found or no device)")
    return " and ".join(problems) or None


def builder_args(precision: str, options: TrtOptions, shapes: list[str], timing_dir: str | None) -> list[str]:
    args = ["build", "--onnx", REMOTE_MODEL, "--engine", REMOTE_ENGINE, "--meta", REMOTE_META, "--precision", precision]
    if options.workspace_mib:
        args += ["--workspace-mib", str(options.workspace_mib)]
    if timing_dir:
        args += ["--timing-cache-dir", timing_dir]
    for spec in shapes:
        args += ["--shape", spec]
    if options.dla_core is not None:
        args += ["--dla-core", str(options.dla_core)]
        if options.gpu_fallback:
            args.append("--gpu-fallback")
    if options.opt_level is not None:
        args += ["--opt-level", str(options.opt_level)]
    args += ["--trtexec", {"auto": "auto", "python": "never", "trtexec": "only"}[options.builder]]
    return args


def trtexec_command(onnx_name: str, engine_name: str, precision: str, options: TrtOptions, shapes: list[str]) -> str:
    """A shell-safe trtexec command line for building by hand (every argument shlex-quoted)."""
    parsed = [builder_script.parse_shape_spec(s) for s in shapes]
    argv = builder_script.trtexec_argv("trtexec", onnx_name, engine_name, precision, options.workspace_mib, parsed,
                                       None, options.dla_core, options.gpu_fallback, options.opt_level)
    return shlex.join(argv)


def build_engine(transport: Transport, onnx_path: Path, precision: str, options: TrtOptions, shapes: list[str],
                 work_dir: Path, engine_name: str, timing_dir: str | None) -> tuple[Path, dict[str, Any]]:
    """Upload the builder and the model through ``transport``, build there, bring the engine and its metadata back."""
    place = "this host" if transport.where == "host" else f"device '{transport.device_name}'"
    engine = work_dir / engine_name
    meta_path = work_dir / f"{engine_name}.build.json"
    with transport:
        transport.upload(BUILDER_SCRIPT, BUILDER_NAME)
        transport.upload(onnx_path, REMOTE_MODEL)
        external = onnx_path.with_name(onnx_path.name + ".data")
        if external.is_file():
            transport.upload(external, external.name)
        result = transport.run_python(BUILDER_NAME, builder_args(precision, options, shapes, timing_dir), timeout=options.build_timeout_s)
        if result.signal == "ALRM":
            raise DeviceError(f"the TensorRT engine build on {place} did not finish within {options.build_timeout_s:.0f} s and was killed",
                              hint="raise backend_options.build_timeout_s in the target profile")
        if result.exit_code != 0:
            kind, message = script_error(result.stderr, "EDGEKIT_BUILDER_ERROR")
            if result.exit_code == builder_script.EXIT_TRT_MISSING:
                hint = ("on a Jetson, install JetPack's TensorRT (sudo apt install nvidia-tensorrt python3-libnvinfer); "
                        "check with: edgekit doctor" if transport.where == "device" else "pip install 'edgekit[tensorrt]' on a host with an NVIDIA GPU")
                error = DeviceError if transport.where == "device" else BackendUnavailable
                raise error(f"cannot build the TensorRT engine on {place}: {message}", hint=hint)
            what = {builder_script.EXIT_PARSE_FAILED: "TensorRT could not parse the model",
                    builder_script.EXIT_BUILD_FAILED: "TensorRT could not build the engine"}.get(result.exit_code, f"the engine builder failed ({kind}, exit {result.exit_code})")
            raise StageError(f"engine: {what} on {place}: {message}",
                             hint="rerun with --keep-work to keep the ONNX handed to TensorRT; ops TensorRT lacks need a plugin or another target")
        transport.download(REMOTE_ENGINE, engine)
        transport.download(REMOTE_META, meta_path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"engine: the builder's metadata from {place} could not be read: {exc}") from None
    return engine, meta


# --- the backend ------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"
    runtime = "tensorrt"
    supports_shape_ranges = True
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

    def runner_options(self, artifact: Artifact, profile: TargetProfile) -> dict[str, Any]:
        engine = artifact.details.get("engine", {})
        return {"engine_meta": {k: engine.get(k) for k in ("tensorrt_version", "gpu", "compute_capability", "precision", "dla_core")}}

    def convert(self, ctx: ConvertContext) -> Artifact:
        options = TrtOptions.from_profile(ctx.profile)
        transport: Transport | None = getattr(ctx, "transport", None)
        ranges: dict[str, ShapeRange] = dict(getattr(ctx, "shape_ranges", None) or {})
        onnx_path, shapes = self._engine_onnx(ctx, ranges)
        details: dict[str, Any] = {"dynamic_shapes": {k: [list(d) for d in v] for k, v in ranges.items()}}
        if ctx.precision == "int8":
            onnx_path, details["qdq"] = self._quantize(ctx, onnx_path, options)

        remote = transport is not None and transport.where == "device"
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
        ctx.record("engine", started, meta.get("builder", "tensorrt"), meta.get("tensorrt_version"),
                   built_on=where, gpu=meta.get("gpu"), compute_capability=meta.get("compute_capability"),
                   precision=ctx.precision, dla_core=meta.get("dla_core"), timing_cache_hit=meta.get("timing_cache_hit"),
                   engine_bytes=meta.get("engine_bytes"))
        identity = [IOBinding(spec.name, spec.name) for spec in ctx.inputs]  # TensorRT keeps the ONNX tensor names
        return Artifact(path=engine, backend=self.name, precision=ctx.precision, runtime=self.runtime,
                        inputs=identity, outputs=[IOBinding(spec.name, spec.name) for spec in ctx.outputs], details=details)

    # --- steps -------------------------------------------------------------------------------

    @staticmethod
    def _engine_onnx(ctx: ConvertContext, ranges: dict[str, ShapeRange]) -> tuple[Path, list[str]]:
        """The ONNX model TensorRT gets: the simplified, shape-fixed one, or for shape ranges the
        source model with its dynamic dims (the simplifier would have baked the OPT shape in)."""
        if not ranges:
            return ctx.model_path, []
        source = getattr(ctx, "source_path", None)
        if source is None:
            raise OptionsError("shape ranges need the source model, which this pipeline did not pass on")
        from edgekit.modelio import load_model, save_model

        loaded = load_model(Path(source))
        shapes = shape_args(ranges, _dynamic_inputs(loaded.proto))
        # saved again so that external data, if any, sits beside it under the name the builder uploads
        return save_model(loaded.proto, ctx.work_dir / f"{Path(source).stem}.dynamic.onnx"), shapes

    @staticmethod
    def _quantize(ctx: ConvertContext, onnx_path: Path, options: TrtOptions) -> tuple[Path, dict[str, Any]]:
        from edgekit.qdq import check_qdq, quantize_qdq

        if ctx.calibration is None:
            raise StageError("quantize: int8 needs calibration data")  # the pipeline checks this earlier
        started = time.perf_counter()
        ctx.log("onnxruntime: inserting Q/DQ nodes (explicit int8 quantization)")
        qdq = quantize_qdq(onnx_path, ctx.calibration, ctx.work_dir / f"{ctx.artifact_stem}.qdq.onnx",
                           op_types=options.int8_op_types, calibration_method=options.calibration_method,
                           nodes_to_exclude=options.int8_exclude_nodes)
        tolerance = ctx.profile.tolerance_for("int8")
        check = check_qdq(ctx.model_path, qdq.path, ctx.calibration.head(min(QDQ_CHECK_SAMPLES, ctx.calibration.count)), tolerance)
        detail = {**qdq.to_dict(), "check": check.to_dict()}
        ctx.record("quantize", started, "onnxruntime.quantization", qdq.tool_version, **qdq.to_dict(),
                   check_passed=check.passed, min_sqnr_db=min(o.sqnr_db for o in check.outputs),
                   min_cosine=min(o.cosine for o in check.outputs))
        if not check.passed:
            worst = ", ".join(f"{o.name}: cosine {o.cosine:.4f}, SQNR {o.sqnr_db:.1f} dB" for o in check.outputs if not o.passed)
            raise VerificationFailed(
                f"the int8 QDQ model fails its onnxruntime check against the float model ({worst}; needs cosine >= "
                f"{tolerance.min_cosine} and SQNR >= {tolerance.min_sqnr_db} dB over {check.samples} calibration samples); no engine was built",
                hint="calibrate with more representative data (same preprocessing as in deployment), try backend_options.calibration_method = "
                "\"entropy\" or \"percentile\", keep sensitive nodes in float with backend_options.int8_exclude_nodes, or use --precision fp16")
        return qdq.path, detail

    @staticmethod
    def _cannot_build(ctx: ConvertContext, problem: str, onnx_path: Path, options: TrtOptions, shapes: list[str]) -> BackendUnavailable:
        kept = ""
        source = getattr(ctx, "source_path", None)
        onnx_name = Path(source).name if source is not None else "MODEL.onnx"
        out_dir = getattr(ctx, "out_dir", None)
        if ctx.precision == "int8" and out_dir is not None:
            kept_path = Path(out_dir) / onnx_path.name
            atomic_copy(onnx_path, kept_path)
            onnx_name = kept_path.name
            qdq = next((s for s in ctx.stages if s.name == "quantize"), None)
            sqnr = f" (min SQNR {qdq.detail['min_sqnr_db']:.1f} dB, min cosine {qdq.detail['min_cosine']:.4f})" if qdq else ""
            kept = f" The int8 QDQ model passed its onnxruntime check{sqnr} and was written to {kept_path}."
        command = trtexec_command(onnx_name, f"{ctx.artifact_stem}.engine", ctx.precision, options, shapes)
        return BackendUnavailable(
            f"target '{ctx.profile.name}': a TensorRT engine must be built on the GPU that will run it, and this host cannot build one: "
            f"{problem}. No engine was built and nothing was verified.{kept}",
            hint=f"build on the device with --device NAME (it uploads the model and builds with the device's TensorRT), "
            f"or on a matching GPU host after pip install 'edgekit[tensorrt]', or by hand on the device: {command}",
        )
