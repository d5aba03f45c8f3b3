"""CUDA for the remote scripts: which GPUs there are (through the driver, by ctypes: no package needed), and
moving buffers through whichever CUDA wrapper the machine has. Python 3.8, stdlib only (numpy where arrays move)."""

import ctypes

# Device memory goes through whichever CUDA wrapper the device has: cuda-python, else torch, else
# polygraphy. Buffers are raw bytes, so the three differ only in malloc/memcpy/stream/event calls.


class CudartApi:
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


class TorchCudaApi:
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


class PolygraphyCudaApi:
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


def cuda_api():
    errors = []
    for api in (CudartApi, TorchCudaApi, PolygraphyCudaApi):
        try:
            return api(), None
        except Exception as exc:
            errors.append("%s: %s" % (api.label, exc))
    return None, "; ".join(errors)


def _libcuda():
    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(library)
        except OSError:
            continue
    return None


def driver_version():
    """The CUDA version the installed driver supports (cuDriverGetVersion), e.g. '12.4', or None without a driver."""
    cuda = _libcuda()
    version = ctypes.c_int(0)
    if cuda is None or cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or not version.value:
        return None
    return "%d.%d" % (version.value // 1000, version.value % 1000 // 10)


def cuda_devices():
    """[{'name', 'compute_capability', 'total_memory_bytes'}] from libcuda, or [] where there is no usable GPU."""
    cuda = _libcuda()
    if cuda is None:
        return []
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for ordinal in range(count.value):
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        total = ctypes.c_size_t(0)
        if cuda.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
            continue
        cuda.cuDeviceGetName(name, 256, device)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
        getattr(cuda, "cuDeviceTotalMem_v2", cuda.cuDeviceTotalMem)(ctypes.byref(total), device)
        devices.append({"name": name.value.decode(errors="replace"), "compute_capability": "%d.%d" % (major.value, minor.value),
                        "total_memory_bytes": total.value})
    return devices


def first_device():
    """GPU 0 as {'name', 'compute_capability', 'total_memory_bytes'}, or {}."""
    devices = cuda_devices()
    return devices[0] if devices else {}
