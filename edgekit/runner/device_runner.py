#!/usr/bin/env python3
"""edgekit device runner: run one converted model on this machine and time it.

Self-contained on purpose: it is uploaded next to the artifact and needs only Python 3.8+,
numpy, and the runtime for the artifact (LiteRT / tflite-runtime / TF Lite, ncnn,
onnxruntime, TensorRT, coremltools on macOS). edgekit itself need not be installed.

    python3 device_runner.py run --artifact A --io io.json --inputs in.npz --outputs out.npz --timings t.json
    python3 device_runner.py probe          # JSON: OS, arch, python, runtimes, free disk

``io.json`` holds {"runtime", "inputs": [names], "outputs": [names], "options": {...},
"warmup", "runs"}. ``in.npz`` holds ``s{sample}_i{k}`` arrays already in the artifact's layout;
``out.npz`` gets ``s{sample}_o{k}``. Errors print one line ``EDGEKIT_RUNNER_ERROR {json}`` on
stderr and exit with: 3 runtime missing, 4 artifact failed to load, 5 inference failed, 2 usage.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

RUNNER_VERSION = 1
EXIT_USAGE, EXIT_RUNTIME_MISSING, EXIT_LOAD_FAILED, EXIT_RUN_FAILED = 2, 3, 4, 5


class RunnerError(Exception):
    def __init__(self, kind, message, code):
        Exception.__init__(self, message)
        self.kind, self.message, self.code = kind, message, code


def _import_first(candidates):
    """Import the first available module of (module, attribute, label) candidates."""
    errors = []
    for module, attribute, label in candidates:
        try:
            imported = __import__(module, fromlist=[attribute] if attribute else [])
            return (getattr(imported, attribute) if attribute else imported), label
        except Exception as exc:  # a broken install can raise more than ImportError
            errors.append("%s: %s" % (module, exc))
    return None, "; ".join(errors)


TFLITE_CANDIDATES = [
    ("ai_edge_litert.interpreter", "Interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite_runtime"),
    ("tensorflow.lite", "Interpreter", "tensorflow.lite"),
]
INSTALL_HINTS = {
    "tflite": "pip install ai-edge-litert (or tflite-runtime on older boards)",
    "ncnn": "pip install ncnn",
    "onnxruntime": "pip install onnxruntime",
    "tensorrt": "install TensorRT's Python bindings (JetPack ships them: python3-libnvinfer)",
    "coreml": "pip install coremltools (on macOS)",
}


def _module_version(module):
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:
        return None


class TFLiteModel:
    def __init__(self, artifact, options):
        interpreter_class, label = _import_first(TFLITE_CANDIDATES)
        if interpreter_class is None:
            raise RunnerError("runtime_missing", "no TFLite runtime importable (%s); %s" % (label, INSTALL_HINTS["tflite"]), EXIT_RUNTIME_MISSING)
        self.runtime = label
        self.runtime_version = _module_version(label.split(".")[0])
        try:
            self.interpreter = interpreter_class(model_path=artifact, num_threads=int(options.get("num_threads", 4)))
            self.interpreter.allocate_tensors()
            self.signature = self.interpreter.get_signature_runner()
        except Exception as exc:
            raise RunnerError("load_failed", "TFLite could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)
        self.input_details = self.signature.get_input_details()
        self.output_details = self.signature.get_output_details()

    @staticmethod
    def _quantize(array, details):
        import numpy as np

        dtype = details["dtype"]
        if np.issubdtype(dtype, np.integer) and array.dtype.kind == "f":
            scale, zero = details["quantization"]
            if scale:
                info = np.iinfo(dtype)
                return np.clip(np.round(array / scale + zero), info.min, info.max).astype(dtype)
        return array.astype(dtype)

    @staticmethod
    def _dequantize(array, details):
        import numpy as np

        if np.issubdtype(array.dtype, np.integer):
            scale, zero = details["quantization"]
            if scale:
                return (array.astype(np.float32) - zero) * scale
        return array

    def run(self, feed):
        fed = {name: self._quantize(value, self.input_details[name]) for name, value in feed.items()}
        result = self.signature(**fed)
        return {name: self._dequantize(value, self.output_details[name]) for name, value in result.items()}


class OnnxModel:
    def __init__(self, artifact, options):
        ort, label = _import_first([("onnxruntime", None, "onnxruntime")])
        if ort is None:
            raise RunnerError("runtime_missing", "onnxruntime is not importable (%s); %s" % (label, INSTALL_HINTS["onnxruntime"]), EXIT_RUNTIME_MISSING)
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(options.get("num_threads", 0))
        try:
            self.session = ort.InferenceSession(artifact, session_options, providers=options.get("providers") or ["CPUExecutionProvider"])
        except Exception as exc:
            raise RunnerError("load_failed", "onnxruntime could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed):
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


class NcnnModel:
    def __init__(self, artifact, options):
        ncnn, label = _import_first([("ncnn", None, "ncnn")])
        if ncnn is None:
            raise RunnerError("runtime_missing", "ncnn is not importable (%s); %s" % (label, INSTALL_HINTS["ncnn"]), EXIT_RUNTIME_MISSING)
        self.ncnn = ncnn
        self.runtime, self.runtime_version = "ncnn", getattr(ncnn, "__version__", None)
        self.net = ncnn.Net()
        self.options = dict(options.get("ncnn_options", {}))
        for key, value in self.options.items():
            setattr(self.net.opt, key, value)
        self.net.opt.num_threads = int(options.get("num_threads", 4))
        # Vulkan only when asked for and a GPU answers; get_gpu_count() is 0 where no Vulkan driver loads.
        self.vulkan = bool(options.get("vulkan")) and _ncnn_call(ncnn, "get_gpu_count", 0) > 0
        self.net.opt.use_vulkan_compute = self.vulkan
        weights = options.get("weights") or (artifact[: -len(".param")] + ".bin")
        try:
            if self.net.load_param(artifact) != 0 or self.net.load_model(weights) != 0:
                raise ValueError("load_param/load_model returned an error")
        except Exception as exc:
            raise RunnerError("load_failed", "ncnn could not load %s / %s: %s" % (artifact, weights, exc), EXIT_LOAD_FAILED)
        self.output_names = options.get("output_names", [])

    def run(self, feed):
        import numpy as np

        extractor = self.net.create_extractor()
        for name, value in feed.items():
            extractor.input(name, self.ncnn.Mat(np.ascontiguousarray(value, dtype=np.float32)).clone())
        outputs = {}
        for name in self.output_names:
            status, mat = extractor.extract(name)
            if status != 0:
                raise RuntimeError("ncnn extract(%r) returned %d" % (name, status))
            outputs[name] = np.array(mat).copy()
        return outputs

    def environment(self):
        applied = dict((key, getattr(self.net.opt, key, None)) for key in self.options)
        return {"ncnn_options": applied, "vulkan": self.vulkan, "num_threads": self.net.opt.num_threads,
                "cpu_fp16_arithmetic": bool(_ncnn_call(self.ncnn, "cpu_support_arm_asimdhp", False))}


def _ncnn_call(ncnn, name, default):
    try:
        return getattr(ncnn, name)()
    except Exception:
        return default


# --- TensorRT ----------------------------------------------------------------------------------
# Device memory goes through whichever CUDA wrapper the device has: cuda-python, else torch, else
# polygraphy. Buffers are raw bytes, so the three differ only in malloc/memcpy/stream/event calls.


class _CudartApi:
    label = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self.stream = self._check(cudart.cudaStreamCreate())

    @staticmethod
    def _check(result):
        result = result if isinstance(result, tuple) else (result,)
        if int(result[0]) != 0:
            raise RuntimeError("CUDA runtime error %s" % (result[0],))
        rest = result[1:]
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes):
        return int(self._check(self.cudart.cudaMalloc(max(nbytes, 1))))

    def h2d(self, ptr, array):
        self._check(self.cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, array, ptr):
        self._check(self.cudart.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def stream_handle(self):
        return int(self.stream)

    def sync(self):
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def timer(self):
        start, end = self._check(self.cudart.cudaEventCreate()), self._check(self.cudart.cudaEventCreate())

        def begin():
            self._check(self.cudart.cudaEventRecord(start, self.stream))

        def finish():
            self._check(self.cudart.cudaEventRecord(end, self.stream))
            self._check(self.cudart.cudaEventSynchronize(end))
            return float(self._check(self.cudart.cudaEventElapsedTime(start, end)))

        return begin, finish

    def mem_info(self):
        free, total = self._check(self.cudart.cudaMemGetInfo())
        return int(free), int(total)


class _TorchCudaApi:
    label = "torch"

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.tensors = {}

    def malloc(self, nbytes):
        tensor = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device="cuda")
        self.tensors[tensor.data_ptr()] = tensor
        return tensor.data_ptr()

    def h2d(self, ptr, array):
        import numpy as np

        with self.torch.cuda.stream(self.stream):
            self.tensors[ptr][: array.nbytes].copy_(self.torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))

    def d2h(self, array, ptr):
        import numpy as np

        self.stream.synchronize()
        array.reshape(-1).view(np.uint8)[:] = self.tensors[ptr][: array.nbytes].cpu().numpy()

    def stream_handle(self):
        return self.stream.cuda_stream

    def sync(self):
        self.stream.synchronize()

    def timer(self):
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)

        def finish():
            end.record(self.stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        return (lambda: start.record(self.stream)), finish

    def mem_info(self):
        return tuple(int(v) for v in self.torch.cuda.mem_get_info())


class _PolygraphyCudaApi:
    label = "polygraphy"

    def __init__(self):
        from polygraphy import cuda

        self.cuda = cuda
        self.wrapper = cuda.wrapper()
        self.stream = cuda.Stream()

    def malloc(self, nbytes):
        return int(self.wrapper.malloc(max(nbytes, 1)))

    def h2d(self, ptr, array):
        self.wrapper.memcpy(ptr, array.ctypes.data, array.nbytes, self.cuda.MemcpyKind.HostToDevice, self.stream.ptr)

    def d2h(self, array, ptr):
        self.wrapper.memcpy(array.ctypes.data, ptr, array.nbytes, self.cuda.MemcpyKind.DeviceToHost, self.stream.ptr)

    def stream_handle(self):
        return self.stream.ptr

    def sync(self):
        self.stream.synchronize()

    def timer(self):
        return None  # no event API in the wrapper: timed with perf_counter after a synchronize

    def mem_info(self):
        return None


def _cuda_api():
    errors = []
    for api in (_CudartApi, _TorchCudaApi, _PolygraphyCudaApi):
        try:
            return api(), None
        except Exception as exc:
            errors.append("%s: %s" % (api.label, exc))
    return None, "; ".join(errors)


def _cuda_device():
    """{'name', 'compute_capability'} of GPU 0 through the CUDA driver (ctypes), or {}."""
    import ctypes

    for library in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(library)
            break
        except OSError:
            continue
    else:
        return {}
    device, major, minor, count = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return {}
    cuda.cuDeviceGetName(name, 256, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
    return {"name": name.value.decode(errors="replace"), "compute_capability": "%d.%d" % (major.value, minor.value)}


def engine_mismatch(expected, trt_version, device):
    """Why an engine built as ``expected`` (the builder's metadata) cannot run here, or None."""
    problems = []
    built_version = expected.get("tensorrt_version")
    if built_version and trt_version and built_version != trt_version:
        problems.append("it was built with TensorRT %s and this device has TensorRT %s" % (built_version, trt_version))
    built_cc, here_cc = expected.get("compute_capability"), device.get("compute_capability")
    if built_cc and here_cc and built_cc != here_cc:
        problems.append("it was built for compute capability %s (%s) and this GPU is %s (%s)" % (
            built_cc, expected.get("gpu") or "unknown GPU", here_cc, device.get("name") or "unknown GPU"))
    if not problems:
        return None
    return ("this TensorRT engine cannot run here: %s. An engine runs only with the TensorRT version and GPU architecture it was built for; "
            "rebuild it on this device (edgekit build MODEL --target TARGET --device NAME)" % "; ".join(problems))


class TensorRTModel:
    def __init__(self, artifact, options):
        import numpy as np

        trt, label = _import_first([("tensorrt", None, "tensorrt")])
        if trt is None:
            raise RunnerError("runtime_missing", "TensorRT's Python bindings are not importable (%s); %s" % (label, INSTALL_HINTS["tensorrt"]), EXIT_RUNTIME_MISSING)
        self.runtime, self.runtime_version, self.trt, self.np = "tensorrt", trt.__version__, trt, np
        self.device = _cuda_device()
        if not self.device:
            raise RunnerError("runtime_missing", "TensorRT %s is installed but there is no usable CUDA GPU here" % trt.__version__, EXIT_RUNTIME_MISSING)
        problem = engine_mismatch(options.get("engine_meta") or {}, trt.__version__, self.device)
        if problem:
            raise RunnerError("load_failed", problem, EXIT_LOAD_FAILED)
        self.cuda, why = _cuda_api()
        if self.cuda is None:
            raise RunnerError("runtime_missing", "TensorRT is installed but no CUDA wrapper to move tensors is importable (%s); pip install cuda-python" % why, EXIT_RUNTIME_MISSING)
        messages = []

        class CapturingLogger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                if int(severity) <= int(trt.ILogger.Severity.ERROR):
                    messages.append(msg)

        self.logger = CapturingLogger()  # kept: TensorRT calls it for the engine's lifetime
        free_before = self.cuda.mem_info()
        try:
            with open(artifact, "rb") as handle:
                self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(handle.read())
        except Exception as exc:
            self.engine = None
            messages.append("%s: %s" % (type(exc).__name__, exc))
        if self.engine is None:
            raise RunnerError("load_failed", "TensorRT %s could not deserialize %s on %s (compute capability %s): %s. An engine runs only with the "
                              "TensorRT version and GPU it was built for; rebuild it on this device" % (
                                  trt.__version__, artifact, self.device.get("name"), self.device.get("compute_capability"),
                                  " | ".join(messages[-5:]) or "no message"), EXIT_LOAD_FAILED)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = dict((n, np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))) for n in names)
        self.buffers = {}  # name -> (device pointer, capacity in bytes)
        free_after = self.cuda.mem_info()
        self.gpu_memory = (free_before[0] - free_after[0]) if free_before and free_after else None

    def _buffer(self, name, nbytes):
        ptr, capacity = self.buffers.get(name, (None, 0))
        if ptr is None or capacity < nbytes:
            ptr = self.cuda.malloc(nbytes)  # the old buffer (if any) is leaked on purpose: runs are short-lived
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def _bind(self, feed):
        for name in self.inputs:
            array = self.np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
            if not self.context.set_input_shape(name, tuple(array.shape)):
                raise RuntimeError("input %r: shape %s is outside the engine's optimization profile" % (name, list(array.shape)))
            ptr = self._buffer(name, array.nbytes)
            self.cuda.h2d(ptr, array)
            self.context.set_tensor_address(name, ptr)
            self._keep = array  # the async copy reads it until the stream syncs
        hosts = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError("output %r has a data-dependent shape %s, which this runner does not support" % (name, list(shape)))
            hosts[name] = self.np.empty(shape, dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, hosts[name].nbytes))
        return hosts

    def _execute(self):
        if not self.context.execute_async_v3(self.cuda.stream_handle()):
            raise RuntimeError("TensorRT execute_async_v3 returned False")

    def run(self, feed):
        hosts = self._bind(feed)
        self._execute()
        for name, host in hosts.items():
            self.cuda.d2h(host, self.buffers[name][0])
        self.cuda.sync()
        return hosts

    def timed_run(self, feed):
        """GPU time of one inference in ms (CUDA events around the enqueue; copies excluded)."""
        self._bind(feed)
        self.cuda.sync()
        timer = self.cuda.timer()
        if timer is None:
            start = time.perf_counter()
            self._execute()
            self.cuda.sync()
            return (time.perf_counter() - start) * 1000.0
        begin, finish = timer
        begin()
        self._execute()
        return finish()

    def environment(self):
        size = getattr(self.engine, "device_memory_size_v2", None)
        if size is None:
            size = getattr(self.engine, "device_memory_size", None)
        return {"gpu": self.device.get("name"), "compute_capability": self.device.get("compute_capability"),
                "cuda_api": self.cuda.label, "timer": "cuda_events" if self.cuda.timer() is not None else "perf_counter_synchronized",
                "gpu_memory_bytes": self.gpu_memory, "engine_device_memory_bytes": size}


class CoreMLModel:
    """A Core ML package through coremltools' predict (macOS only: Core ML itself does the work)."""

    def __init__(self, artifact, options):
        if sys.platform != "darwin":
            raise RunnerError("runtime_missing", "Core ML prediction needs macOS (this host runs %s)" % platform.system(), EXIT_RUNTIME_MISSING)
        ct, label = _import_first([("coremltools", None, "coremltools")])
        if ct is None:
            raise RunnerError("runtime_missing", "coremltools is not importable (%s); %s" % (label, INSTALL_HINTS["coreml"]), EXIT_RUNTIME_MISSING)
        self.runtime, self.runtime_version = "coremltools", ct.__version__
        self.compute_units = options.get("compute_units", "ALL")
        self.image_inputs = options.get("image_inputs") or {}
        try:
            self.model = ct.models.MLModel(artifact, compute_units=getattr(ct.ComputeUnit, self.compute_units))
        except Exception as exc:
            raise RunnerError("load_failed", "Core ML could not load %s: %s" % (artifact, exc), EXIT_LOAD_FAILED)

    def _image(self, array, spec):
        """A PIL image whose pixels, after the package's scale and bias, give ``array`` back (up to rounding)."""
        import numpy as np
        from PIL import Image

        planes = (array[0].astype(np.float64) - np.asarray(spec["bias"]).reshape(-1, 1, 1)) / spec["scale"]
        pixels = np.clip(np.round(planes), 0, 255).astype(np.uint8)
        if spec["color"] == "GRAY":
            return Image.fromarray(pixels[0], mode="L")
        if spec["color"] == "BGR":
            pixels = pixels[::-1]
        return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")

    def run(self, feed):
        import numpy as np

        fed = {}
        for name, value in feed.items():
            if name in self.image_inputs:
                fed[name] = self._image(value, self.image_inputs[name])
            else:
                fed[name] = value.astype(np.int32) if value.dtype.kind in "iu" else value.astype(np.float32)
        return dict((name, np.asarray(value)) for name, value in self.model.predict(fed).items())

    def environment(self):
        return {"compute_units": self.compute_units, "macos": platform.mac_ver()[0]}


RUNTIMES = {"tflite": TFLiteModel, "onnxruntime": OnnxModel, "ncnn": NcnnModel, "tensorrt": TensorRTModel, "coreml": CoreMLModel}


def _peak_rss_kb():
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
    except Exception:
        return None


def _percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def command_run(args):
    import numpy as np

    started_at = time.time()  # edgekit's guard starts the runner once it holds the machine's lock
    with open(args.io) as handle:
        io = json.load(handle)
    runtime = io["runtime"]
    if runtime not in RUNTIMES:
        raise RunnerError("runtime_unsupported", "this runner does not know runtime %r (knows %s)" % (runtime, ", ".join(sorted(RUNTIMES))), EXIT_RUNTIME_MISSING)
    options = dict(io.get("options", {}))
    options.setdefault("output_names", io["outputs"])
    model = RUNTIMES[runtime](args.artifact, options)
    with np.load(args.inputs, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    samples = int(io.get("samples", 1))
    results = {}
    try:
        for s in range(samples):
            feed = {name: arrays["s%d_i%d" % (s, k)] for k, name in enumerate(io["inputs"])}
            outputs = model.run(feed)
            for k, name in enumerate(io["outputs"]):
                if name not in outputs:
                    raise RunnerError("run_failed", "output %r not produced; the model produced %s" % (name, sorted(outputs)), EXIT_RUN_FAILED)
                results["s%d_o%d" % (s, k)] = np.asarray(outputs[name])
        first = {name: arrays["s0_i%d" % k] for k, name in enumerate(io["inputs"])}
        for _ in range(int(io.get("warmup", 5))):
            model.run(first)
        times = []
        timed_run = getattr(model, "timed_run", None)  # GPU runtimes time themselves (CUDA events)
        for _ in range(int(io.get("runs", 30))):
            if timed_run is not None:
                times.append(timed_run(first))
                continue
            start = time.perf_counter()
            model.run(first)
            times.append((time.perf_counter() - start) * 1000.0)
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("run_failed", "inference failed: %s: %s" % (type(exc).__name__, exc), EXIT_RUN_FAILED)
    np.savez(args.outputs, **results)
    ordered = sorted(times)
    timings = {
        "runner_version": RUNNER_VERSION,
        "runtime": model.runtime,
        "runtime_version": model.runtime_version,
        "warmup": int(io.get("warmup", 5)),
        "runs": len(times),
        "times_ms": times,
        "p50": _percentile(ordered, 0.50),
        "p90": _percentile(ordered, 0.90),
        "p99": _percentile(ordered, 0.99),
        "mean": sum(times) / len(times) if times else None,
        "peak_rss_kb": _peak_rss_kb(),
        "started_at": started_at,
        "finished_at": time.time(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "numpy": np.__version__,
        "environment_extra": model.environment() if hasattr(model, "environment") else {},
    }
    with open(args.timings, "w") as handle:
        json.dump(timings, handle)
    return 0


def command_probe(args):
    report = {
        "runner_version": RUNNER_VERSION,
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_ok": sys.version_info >= (3, 8),
        "runtimes": {},
    }
    try:
        import numpy

        report["numpy"] = numpy.__version__
    except Exception as exc:
        report["numpy"] = None
        report["numpy_error"] = str(exc)
    checks = {
        "ai_edge_litert": "ai_edge_litert.interpreter",
        "tflite_runtime": "tflite_runtime.interpreter",
        "tensorflow.lite": "tensorflow",
        "ncnn": "ncnn",
        "onnxruntime": "onnxruntime",
        "tensorrt": "tensorrt",
        "coremltools": "coremltools",
    }
    for label, module in checks.items():
        try:
            imported = __import__(module, fromlist=["_"])
            report["runtimes"][label] = getattr(imported, "__version__", None) or _module_version(module.split(".")[0]) or "available"
        except Exception:
            report["runtimes"][label] = None
    report["trtexec"] = shutil.which("trtexec") or (os.path.exists("/usr/src/tensorrt/bin/trtexec") and "/usr/src/tensorrt/bin/trtexec") or None
    try:
        usage = shutil.disk_usage(args.path or ".")
        report["free_disk_bytes"] = usage.free
    except OSError:
        report["free_disk_bytes"] = None
    print(json.dumps(report))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="edgekit device runner")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    for name in ("artifact", "io", "inputs", "outputs", "timings"):
        run.add_argument("--" + name, required=True)
    probe = sub.add_parser("probe")
    probe.add_argument("--path", default=".")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return command_run(args) if args.command == "run" else command_probe(args)
    except RunnerError as exc:
        sys.stderr.write("EDGEKIT_RUNNER_ERROR " + json.dumps({"kind": exc.kind, "message": exc.message}) + "\n")
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
