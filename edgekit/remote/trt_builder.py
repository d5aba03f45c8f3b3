"""Build a serialized TensorRT engine from an ONNX model on the machine that will run it.

Part of edgekit's remote zipapp (like the runner): it runs on a Jetson or on a GPU host and needs only
Python 3.8+ and TensorRT's Python bindings (JetPack ships them), or ``trtexec`` as a fallback when the
bindings are missing. edgekit itself need not be installed.

    python3 edgekit_remote.pyz trt-build --onnx M.onnx --engine M.engine --meta build.json --precision fp16 \
        [--workspace-mib 1024] [--timing-cache-dir ~/.cache/edgekit/trt-timing] \
        [--shape images=1x3x224x224:4x3x224x224:8x3x224x224] [--dla-core 0 --gpu-fallback] \
        [--opt-level 3] [--trtexec auto|never|only] [--trtexec-path PATH]
    python3 edgekit_remote.pyz trt-probe     # JSON: TensorRT version, GPU, compute capability, DLA cores, trtexec

int8 expects an ONNX model with QuantizeLinear/DequantizeLinear nodes (explicit quantization): the
builder sets the INT8 flag (and FP16, so layers outside the Q/DQ pairs may run in half precision) and
never calibrates. ``build.json`` gets the engine's metadata. Exit codes (protocol.py): EXIT_MISSING
TensorRT (and trtexec) missing, EXIT_LOAD_FAILED the ONNX model does not parse, EXIT_FAILED the build failed.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import time

from .cuda import cuda_devices
from .protocol import (
    EXIT_FAILED,
    EXIT_LOAD_FAILED,
    EXIT_MISSING,
    EXIT_USAGE,
    PROTOCOL_VERSION,
    TENSORRT_API_ERROR,
    RemoteError,
    import_first,
)
from .rt_tensorrt import capturing_logger

PRECISIONS = ("fp32", "fp16", "int8")
TRTEXEC_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
TRTEXEC_TIMEOUT_S = 3600


# --- shapes -----------------------------------------------------------------------------------


def parse_dims(text):
    parts = text.strip().lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError("dimensions must be integers separated by 'x' (e.g. 1x3x224x224), got %r" % text)
    if not dims or any(d <= 0 for d in dims):
        raise ValueError("dimensions must be positive, got %r" % text)
    return dims


def parse_shape_spec(text):
    """``name=1x3x224x224`` (fixed) or ``name=MIN:OPT:MAX`` -> (name, min, opt, max), each a list of ints."""
    if "=" not in text:
        raise ValueError("expected NAME=DIMS or NAME=MIN:OPT:MAX, e.g. images=1x3x224x224:4x3x224x224:8x3x224x224; got %r" % text)
    name, spec = text.rsplit("=", 1)
    if not name:
        raise ValueError("%r names no input" % text)
    parts = spec.split(":")
    if len(parts) == 1:
        dims = parse_dims(parts[0])
        return name, dims, dims, dims
    if len(parts) != 3:
        raise ValueError("%r: a shape range needs exactly three shapes MIN:OPT:MAX, got %d" % (text, len(parts)))
    low, opt, high = (parse_dims(p) for p in parts)
    if not len(low) == len(opt) == len(high):
        raise ValueError("%r: MIN, OPT and MAX must have the same rank" % text)
    if any(not (a <= b <= c) for a, b, c in zip(low, opt, high)):
        raise ValueError("%r: every dim must satisfy MIN <= OPT <= MAX" % text)
    return name, low, opt, high


def _trtexec_name(name):
    # trtexec splits shape specs on ',' and ':'; it takes names wrapped in single quotes for that.
    return "'%s'" % name if (":" in name or "," in name) else name


def _trtexec_shapes(shapes, which):
    index = {"min": 1, "opt": 2, "max": 3}[which]
    return ",".join("%s:%s" % (_trtexec_name(s[0]), "x".join(str(d) for d in s[index])) for s in shapes)


def trtexec_argv(trtexec, onnx, engine, precision, workspace_mib=None, shapes=(), timing_cache=None,
                 dla_core=None, gpu_fallback=False, opt_level=None, skip_flag="--skipInference", pool_flag=True):
    """The trtexec command line as an argv list (no shell involved; see shlex.join for display)."""
    if precision not in PRECISIONS:
        raise ValueError("precision must be one of %s, got %r" % (", ".join(PRECISIONS), precision))
    argv = [trtexec, "--onnx=" + onnx, "--saveEngine=" + engine]
    if precision in ("fp16", "int8"):
        argv.append("--fp16")
    if precision == "int8":
        argv.append("--int8")  # explicit quantization: the Q/DQ scales in the model are used, no calibration
    if workspace_mib:
        argv.append("--memPoolSize=workspace:%dM" % workspace_mib if pool_flag else "--workspace=%d" % workspace_mib)
    if shapes:
        for which, flag in (("min", "--minShapes="), ("opt", "--optShapes="), ("max", "--maxShapes=")):
            argv.append(flag + _trtexec_shapes(shapes, which))
    if timing_cache:
        argv.append("--timingCacheFile=" + timing_cache)
    if dla_core is not None:
        argv.append("--useDLACore=%d" % dla_core)
        if gpu_fallback:
            argv.append("--allowGPUFallback")
    if opt_level is not None:
        argv.append("--builderOptimizationLevel=%d" % opt_level)
    if skip_flag:
        argv.append(skip_flag)
    return argv


def find_trtexec(explicit=None):
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    found = shutil.which("trtexec")
    if found:
        return found
    for candidate in TRTEXEC_LOCATIONS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def import_tensorrt():
    """(tensorrt, None), or (None, why not)."""
    trt, why = import_first([("tensorrt", None, "tensorrt")])
    if trt is not None and not hasattr(trt, "Builder"):
        return None, "the importable 'tensorrt' module (%s) is not NVIDIA TensorRT" % getattr(trt, "__file__", "?")
    return trt, why

def _version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


# --- build with the TensorRT Python API ---------------------------------------------------------


def _errors(messages, limit=12):
    errors = [m for m in messages if m.startswith("ERROR")] or messages
    return "\n".join(errors[-limit:])


def _timing_cache_path(directory, trt_version, device):
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device.get("name", "gpu")).strip("-").lower() or "gpu"
    return os.path.join(os.path.expanduser(directory), "trt%s-%s-cc%s.cache" % (trt_version, slug, device.get("compute_capability", "x").replace(".", "")))


def _write_atomic(path, data):
    tmp = "%s.%d.partial" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _network_io(trt, network):
    def describe(tensor):
        return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1].lower()}

    return ([describe(network.get_input(i)) for i in range(network.num_inputs)],
            [describe(network.get_output(i)) for i in range(network.num_outputs)])


def build_with_api(trt, args, shapes, device):
    messages = []
    logger = capturing_logger(trt, messages, "WARNING")
    builder = trt.Builder(logger)
    version = _version_tuple(trt.__version__)
    flags = 0
    if version < (10,):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # implicit batch is gone in 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(args.onnx) if hasattr(parser, "parse_from_file") else parser.parse(open(args.onnx, "rb").read(), args.onnx)
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RemoteError("parse_failed", "TensorRT %s could not parse %s:\n%s" % (trt.__version__, args.onnx, "\n".join(errors[:12]) or _errors(messages)), EXIT_LOAD_FAILED)

    config = builder.create_builder_config()
    if args.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace_mib << 20)
    if args.precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            messages.append("WARNING: this GPU has no fast fp16; TensorRT may keep layers in fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    if args.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # with Q/DQ nodes in the network this is explicit quantization
    if args.opt_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = args.opt_level
    if args.dla_core is not None:
        if builder.num_DLA_cores <= args.dla_core:
            raise RemoteError("build_failed", "DLA core %d requested but this device has %d DLA core(s)" % (args.dla_core, builder.num_DLA_cores), EXIT_FAILED)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = args.dla_core
        if args.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    by_name = dict((s[0], s) for s in shapes)
    inputs, outputs = _network_io(trt, network)
    dynamic = [i for i in inputs if any(d < 0 for d in i["shape"])]
    unknown = [name for name in by_name if name not in [i["name"] for i in inputs]]
    if unknown:
        raise RemoteError("build_failed", "--shape names %s, but the network's inputs are %s" % (", ".join(unknown), ", ".join(i["name"] for i in inputs)), EXIT_USAGE)
    if dynamic:
        missing = [i["name"] for i in dynamic if i["name"] not in by_name]
        if missing:
            raise RemoteError("build_failed", "inputs %s have dynamic dims; give --shape NAME=MIN:OPT:MAX for each" % ", ".join(missing), EXIT_USAGE)
        profile = builder.create_optimization_profile()
        for item in inputs:
            spec = by_name.get(item["name"])
            if spec is None:
                continue
            if len(spec[1]) != len(item["shape"]):
                raise RemoteError("build_failed", "--shape %s has rank %d, the input has rank %d %s" % (item["name"], len(spec[1]), len(item["shape"]), item["shape"]), EXIT_USAGE)
            profile.set_shape(item["name"], spec[1], spec[2], spec[3])
        config.add_optimization_profile(profile)

    cache_path, cache_hit = None, False
    if args.timing_cache_dir:
        cache_path = _timing_cache_path(args.timing_cache_dir, trt.__version__, device)
        data = b""
        if os.path.isfile(cache_path):
            with open(cache_path, "rb") as handle:
                data = handle.read()
        timing_cache = config.create_timing_cache(data)
        if not config.set_timing_cache(timing_cache, False):
            timing_cache = config.create_timing_cache(b"")  # a stale cache from another version: start afresh
            config.set_timing_cache(timing_cache, False)
            data = b""
        cache_hit = len(data) > 0

    started = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RemoteError("build_failed", "TensorRT %s could not build the engine:\n%s" % (trt.__version__, _errors(messages)), EXIT_FAILED)
    _write_atomic(args.engine, bytes(serialized))
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return {
        "builder": "tensorrt-python",
        "build_seconds": round(time.time() - started, 3),
        "inputs": inputs,
        "outputs": outputs,
        "num_dla_cores": builder.num_DLA_cores,
        "timing_cache": cache_path,
        "timing_cache_hit": cache_hit,
        "warnings": [m for m in messages if m.startswith("WARNING")][-10:],
    }


def build_with_tensorrt(trt, args, shapes, device):
    """build_with_api, with any exception TensorRT's API raises that the builder does not expect (a renamed or removed
    call in a TensorRT it was not written for) turned into a RemoteError that names the TensorRT version."""
    try:
        return build_with_api(trt, args, shapes, device)
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError(TENSORRT_API_ERROR, "TensorRT %s raised %s: %s (in the builder's use of its Python API)"
                          % (getattr(trt, "__version__", "of unknown version"), type(exc).__name__, exc), EXIT_FAILED)


# --- build with trtexec --------------------------------------------------------------------------


def build_with_trtexec(trtexec, args, shapes):
    try:
        help_text = subprocess.run([trtexec, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RemoteError("trt_missing", "trtexec at %s does not run: %s" % (trtexec, exc), EXIT_MISSING)
    skip_flag = "--skipInference" if "--skipInference" in help_text else ("--buildOnly" if "--buildOnly" in help_text else None)
    cache = None
    if args.timing_cache_dir:
        directory = os.path.expanduser(args.timing_cache_dir)
        os.makedirs(directory, exist_ok=True)
        cache = os.path.join(directory, "trtexec.cache")
    argv = trtexec_argv(trtexec, args.onnx, args.engine, args.precision, args.workspace_mib,
                        shapes, cache,
                        args.dla_core, args.gpu_fallback, args.opt_level, skip_flag, "--memPoolSize" in help_text)
    started = time.time()
    try:
        completed = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TRTEXEC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RemoteError("build_failed", "trtexec did not finish within %d s" % TRTEXEC_TIMEOUT_S, EXIT_FAILED)
    log = completed.stdout.decode(errors="replace")
    if completed.returncode != 0 or not os.path.isfile(args.engine):
        lines = [line for line in log.splitlines() if "[E]" in line or "Error" in line] or log.splitlines()
        raise RemoteError("build_failed", "trtexec failed (exit %d):\n%s" % (completed.returncode, "\n".join(lines[-15:])), EXIT_FAILED)
    return dict(parse_trtexec_log(log), builder="trtexec", trtexec=trtexec, build_seconds=round(time.time() - started, 3),
                timing_cache=cache, argv=argv)


def parse_trtexec_log(log):
    """TensorRT version, device name and compute capability from trtexec's log (best effort)."""
    patterns = {"tensorrt_version": r"TensorRT version:\s*([\d.]+)", "gpu": r"Selected Device:\s*(.+)",
                "compute_capability": r"Compute Capability:\s*([\d.]+)"}
    found = {}
    for key, pattern in patterns.items():
        match = re.search(pattern, log)
        if match:
            found[key] = match.group(1).strip()
    return found


# --- commands ---------------------------------------------------------------------------------


def command_build(args):
    shapes = []
    for text in args.shape:
        try:
            shapes.append(parse_shape_spec(text))
        except ValueError as exc:
            raise RemoteError("usage", "--shape: %s" % exc, EXIT_USAGE)
    if not os.path.isfile(args.onnx):
        raise RemoteError("usage", "ONNX model %s not found" % args.onnx, EXIT_USAGE)
    devices = cuda_devices()
    device = devices[0] if devices else {}
    trt, import_error = (None, "not tried (--trtexec only)") if args.trtexec == "only" else import_tensorrt()
    meta = {"builder_version": PROTOCOL_VERSION, "precision": args.precision, "dla_core": args.dla_core,
            "gpu": device.get("name"), "compute_capability": device.get("compute_capability"),
            "gpu_memory_bytes": device.get("total_memory_bytes"), "machine": platform.machine(),
            "python": platform.python_version(), "workspace_mib": args.workspace_mib,
            "shapes": {s[0]: {"min": s[1], "opt": s[2], "max": s[3]} for s in shapes}}
    if trt is not None:
        if not devices:
            raise RemoteError("no_gpu", "TensorRT %s is installed but no CUDA GPU is usable here (libcuda missing or no device)" % trt.__version__, EXIT_MISSING)
        meta.update(build_with_tensorrt(trt, args, shapes, device), tensorrt_version=trt.__version__)
    else:
        trtexec = find_trtexec(args.trtexec_path) if args.trtexec != "never" else None
        if trtexec is None:
            raise RemoteError("trt_missing", "neither TensorRT's Python bindings (%s) nor trtexec are available on this machine; "
                             "on a Jetson install JetPack's TensorRT (sudo apt install python3-libnvinfer tensorrt), elsewhere pip install tensorrt" % import_error, EXIT_MISSING)
        meta.update(build_with_trtexec(trtexec, args, shapes))
    meta["engine_bytes"] = os.path.getsize(args.engine)
    with open(args.meta, "w") as handle:
        json.dump(meta, handle, indent=2)
    return 0


def command_probe(args):
    trt, error = import_tensorrt()
    devices = cuda_devices()
    report = {"builder_version": PROTOCOL_VERSION, "python": platform.python_version(), "machine": platform.machine(),
              "tensorrt": trt.__version__ if trt else None, "tensorrt_error": error, "trtexec": find_trtexec(),
              "devices": devices}
    if trt is not None and devices:
        try:
            report["num_dla_cores"] = trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores
        except Exception as exc:
            report["builder_error"] = str(exc)
    print(json.dumps(report))
    return 0


def add_commands(sub):
    """Add trt-build and trt-probe to the remote entry point's argument parser."""
    build = sub.add_parser("trt-build")
    build.add_argument("--onnx", required=True)
    build.add_argument("--engine", required=True)
    build.add_argument("--meta", required=True)
    build.add_argument("--precision", required=True, choices=PRECISIONS)
    build.add_argument("--workspace-mib", type=int, default=None)
    build.add_argument("--timing-cache-dir", default=None)
    build.add_argument("--shape", action="append", default=[], help="NAME=DIMS or NAME=MIN:OPT:MAX")
    build.add_argument("--dla-core", type=int, default=None)
    build.add_argument("--gpu-fallback", action="store_true")
    build.add_argument("--opt-level", type=int, default=None, choices=range(0, 6))
    build.add_argument("--trtexec", default="auto", choices=("auto", "never", "only"))
    build.add_argument("--trtexec-path", default=None)
    sub.add_parser("trt-probe")
