"""TensorRT engines: deserialized with the machine's TensorRT, buffers moved through its CUDA wrapper, timed with CUDA events."""

import time

from .cuda import cuda_api, first_device
from .protocol import EXIT_LOAD_FAILED, EXIT_MISSING, RemoteError, require_runtime


def capturing_logger(trt, messages, worst):
    """A TensorRT logger that appends messages of severity ``worst`` ("ERROR", "WARNING") or worse to ``messages``."""
    threshold = int(getattr(trt.ILogger.Severity, worst))
    error = int(trt.ILogger.Severity.ERROR)

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            level = int(severity)  # pybind11 enums compare reliably only as ints
            if level <= threshold:
                messages.append(("ERROR" if level <= error else "WARNING") + ": " + msg)

    return CapturingLogger()


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


class Model:
    def __init__(self, artifact, options):
        import numpy as np

        trt, label = require_runtime("tensorrt", [("tensorrt", None, "tensorrt")], "TensorRT's Python bindings")
        self.runtime, self.runtime_version, self.trt, self.np = "tensorrt", trt.__version__, trt, np
        self.device = first_device()
        if not self.device:
            raise RemoteError("runtime_missing", "TensorRT %s is installed but there is no usable CUDA GPU here" % trt.__version__, EXIT_MISSING)
        problem = engine_mismatch(options.get("engine_meta") or {}, trt.__version__, self.device)
        if problem:
            raise RemoteError("load_failed", problem, EXIT_LOAD_FAILED)
        self.cuda, why = cuda_api()
        if self.cuda is None:
            raise RemoteError("runtime_missing", "TensorRT is installed but no CUDA wrapper to move tensors is importable (%s); pip install cuda-python" % why, EXIT_MISSING)
        messages = []
        self.logger = capturing_logger(trt, messages, "ERROR")  # kept: TensorRT calls it for the engine's lifetime
        free_before = self.cuda.mem_info()
        try:
            with open(artifact, "rb") as handle:
                self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(handle.read())
        except Exception as exc:
            self.engine = None
            messages.append("%s: %s" % (type(exc).__name__, exc))
        if self.engine is None:
            raise RemoteError("load_failed", "TensorRT %s could not deserialize %s on %s (compute capability %s): %s. An engine runs only with the "
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
