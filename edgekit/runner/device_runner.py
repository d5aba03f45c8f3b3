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
        for key, value in options.get("ncnn_options", {}).items():
            setattr(self.net.opt, key, value)
        self.net.opt.num_threads = int(options.get("num_threads", 4))
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


RUNTIMES = {"tflite": TFLiteModel, "onnxruntime": OnnxModel, "ncnn": NcnnModel}


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
        for _ in range(int(io.get("runs", 30))):
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
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "numpy": np.__version__,
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
