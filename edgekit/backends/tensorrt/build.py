"""Building a TensorRT engine where it will run: the remote builder (part of edgekit's zipapp) runs on this host or
on the device through a transport; the engine and its metadata come back. Also the trtexec command line for
building by hand, and the optimization-profile shapes for dynamic inputs."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from edgekit.backends.base import ShapeRange
from edgekit.backends.tensorrt.options import TrtOptions
from edgekit.errors import BackendUnavailable, DeviceError, EdgekitError, OptionsError, StageError, script_error
from edgekit.remote import cuda, trt_builder
from edgekit.remote.bundle import BUNDLE_NAME, write_bundle
from edgekit.remote.protocol import EXIT_FAILED, EXIT_LOAD_FAILED, EXIT_MISSING, TENSORRT_API_ERROR
from edgekit.transport.base import Transport

REMOTE_MODEL = "model.onnx"  # fixed names on the build machine: the user's file names never reach a command line
REMOTE_ENGINE = "model.engine"
REMOTE_META = "build.json"
REMOTE_TIMING_DIR = "~/.cache/edgekit/trt-timing"


def timing_cache_dir() -> Path:
    """Where local builds keep TensorRT timing caches ($EDGEKIT_TRT_TIMING_DIR, default ~/.cache/edgekit/trt-timing)."""
    return Path(os.environ.get("EDGEKIT_TRT_TIMING_DIR") or Path.home() / ".cache" / "edgekit" / "trt-timing")


def dynamic_inputs(model: Any) -> dict[str, list[int | str | None]]:
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


def host_build_problem() -> str | None:
    """Why this host cannot build engines, or None when it can (CUDA GPU and tensorrt importable)."""
    problems = []
    if importlib.util.find_spec("tensorrt") is None:
        problems.append("the 'tensorrt' Python package is not installed")
    if not cuda.cuda_devices():
        problems.append("there is no usable CUDA GPU (libcuda not found or no device)")
    return " and ".join(problems) or None


def host_identity(devices: list[dict[str, Any]], tensorrt_version: str | None, driver: str | None) -> dict[str, Any]:
    """What makes an engine built on this host this host's: its GPU and the driver and TensorRT that build for it
    (from :func:`edgekit.remote.cuda.cuda_devices`, the installed ``tensorrt``, :func:`edgekit.remote.cuda.driver_version`)."""
    gpu = devices[0] if devices else {}
    return {"gpu": gpu.get("name") or "no GPU", "compute_capability": gpu.get("compute_capability"),
            "cuda_driver": driver, "tensorrt": tensorrt_version}


def foreign_gpu(options: TrtOptions, device: dict[str, Any]) -> str | None:
    """Why an engine built on ``device`` (a cuda_devices() entry) is not one for the target, or None when the profile's
    [hardware] compute_capability matches it (or names none)."""
    wanted, here = options.compute_capability, device.get("compute_capability")
    if wanted is None or here is None or wanted == here:
        return None
    target = f"{options.gpu} " if options.gpu else ""
    return (f"the target's GPU is {target}(compute capability {wanted}), but this host's GPU is {device.get('name') or 'unknown'} "
            f"(compute capability {here}); an engine built here runs only on compute capability {here}")


def builder_args(precision: str, options: TrtOptions, shapes: list[str], timing_dir: str | None) -> list[str]:
    args = ["trt-build", "--onnx", REMOTE_MODEL, "--engine", REMOTE_ENGINE, "--meta", REMOTE_META, "--precision", precision]
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
    if options.builder_optimization_level is not None:
        args += ["--opt-level", str(options.builder_optimization_level)]
    args += ["--trtexec", {"auto": "auto", "python": "never", "trtexec": "only"}[options.builder]]
    return args


def trtexec_command(onnx_name: str, engine_name: str, precision: str, options: TrtOptions, shapes: list[str]) -> str:
    """A shell-safe trtexec command line for building by hand (every argument shlex-quoted)."""
    parsed = [trt_builder.parse_shape_spec(s) for s in shapes]
    argv = trt_builder.trtexec_argv("trtexec", onnx_name, engine_name, precision, options.workspace_mib, parsed,
                                       None, options.dla_core, options.gpu_fallback, options.builder_optimization_level)
    return shlex.join(argv)


def build_engine(transport: Transport, onnx_path: Path, precision: str, options: TrtOptions, shapes: list[str],
                 work_dir: Path, engine_name: str, timing_dir: str | None) -> tuple[Path, dict[str, Any]]:
    """Upload the builder and the model through ``transport``, build there, bring the engine and its metadata back."""
    place = "this host" if transport.where == "host" else f"device '{transport.device_name}'"
    engine = work_dir / engine_name
    meta_path = work_dir / f"{engine_name}.build.json"
    with tempfile.TemporaryDirectory(prefix="edgekit-trt-") as scratch, transport:
        transport.upload(write_bundle(Path(scratch)), BUNDLE_NAME)
        transport.upload(onnx_path, REMOTE_MODEL)
        external = onnx_path.with_name(onnx_path.name + ".data")
        if external.is_file():
            transport.upload(external, external.name)
        result = transport.run_python(BUNDLE_NAME, builder_args(precision, options, shapes, timing_dir), timeout=options.build_timeout_s)
        if result.signal == "ALRM":
            raise DeviceError(f"the TensorRT engine build on {place} did not finish within {options.build_timeout_s:.0f} s and was killed",
                              hint="raise backend_options.build_timeout_s in the target profile")
        if result.exit_code != 0:
            raise builder_failure(result.exit_code, result.stderr, place, transport.where)
        transport.download(REMOTE_ENGINE, engine)
        transport.download(REMOTE_META, meta_path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"engine: the builder's metadata from {place} could not be read: {exc}") from None
    return engine, meta




def builder_failure(exit_code: int, stderr: str, place: str, where: str) -> EdgekitError:
    """The error for a failed run of the remote engine builder, from its exit code and its error line."""
    kind, message = script_error(stderr)
    if exit_code == EXIT_MISSING:
        hint = ("on a Jetson, install JetPack's TensorRT (sudo apt install nvidia-tensorrt python3-libnvinfer); "
                "check with: edgekit doctor" if where == "device" else "pip install 'edgekit[tensorrt]' on a host with an NVIDIA GPU")
        error = DeviceError if where == "device" else BackendUnavailable
        return error(f"cannot build the TensorRT engine on {place}: {message}", hint=hint)
    if kind == TENSORRT_API_ERROR:
        return StageError(f"engine: TensorRT failed unexpectedly on {place}: {message}",
                          hint="edgekit's builder is written for TensorRT 8.5 to 10.x (pip install 'edgekit[tensorrt]' pins tensorrt>=10,<11); "
                          "if that is the version named here, please report it with this message")
    what = {EXIT_LOAD_FAILED: "TensorRT could not parse the model",
            EXIT_FAILED: "TensorRT could not build the engine"}.get(exit_code, f"the engine builder failed ({kind}, exit {exit_code})")
    return StageError(f"engine: {what} on {place}: {message}",
                      hint="rerun with --keep-work to keep the ONNX handed to TensorRT; ops TensorRT lacks need a plugin or another target")
