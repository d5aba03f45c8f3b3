"""ncnn artifacts (.param + .bin) through the ncnn Python runtime; Vulkan only when asked for and a GPU answers."""

from .protocol import EXIT_LOAD_FAILED, RemoteError, require_runtime


class Model:
    def __init__(self, artifact, options):
        ncnn, label = require_runtime("ncnn", [("ncnn", None, "ncnn")], "ncnn")
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
            raise RemoteError("load_failed", "ncnn could not load %s / %s: %s" % (artifact, weights, exc), EXIT_LOAD_FAILED)
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
