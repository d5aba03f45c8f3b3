#!/usr/bin/env python3
"""edgekit's remote entry point: run one converted model on this machine and time it, describe the
machine, or build a TensorRT engine here.

Self-contained on purpose: it travels to devices as one zipapp (``edgekit_remote.pyz``) and needs only
Python 3.8+, numpy, and the runtime for the artifact (LiteRT / tflite-runtime / TF Lite, ncnn,
onnxruntime, TensorRT, coremltools on macOS). edgekit itself need not be installed.

    python3 edgekit_remote.pyz run --artifact A --io io.json --inputs in.npz --outputs out.npz --timings t.json
    python3 edgekit_remote.pyz probe            # JSON: OS, arch, python, runtimes, free disk
    python3 edgekit_remote.pyz trt-build ...    # see trt_builder.py
    python3 edgekit_remote.pyz trt-probe

``io.json`` holds {"runtime", "inputs": [names], "outputs": [names], "options": {...}, "samples",
"warmup", "runs"}. ``in.npz`` holds ``s{sample}_i{k}`` arrays already in the artifact's layout;
``out.npz`` gets ``s{sample}_o{k}``. Errors print one ``EDGEKIT_REMOTE_ERROR {json}`` line on stderr
and exit with the codes in protocol.py.
"""

import argparse
import importlib
import json
import platform
import shutil
import sys
import time

from . import trt_builder
from .protocol import EXIT_FAILED, EXIT_MISSING, EXIT_USAGE, PROTOCOL_VERSION, RemoteError, module_version, report_error

#: runtime name -> module (in this package) whose ``Model`` runs that runtime's artifacts
RUNTIMES = {"tflite": "rt_tflite", "onnxruntime": "rt_onnxruntime", "ncnn": "rt_ncnn", "tensorrt": "rt_tensorrt", "coreml": "rt_coreml"}
PROBED_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow.lite": "tensorflow",
    "ncnn": "ncnn",
    "onnxruntime": "onnxruntime",
    "tensorrt": "tensorrt",
    "coremltools": "coremltools",
}


def load_model(runtime, artifact, options):
    if runtime not in RUNTIMES:
        raise RemoteError("runtime_unsupported", "this runner does not know runtime %r (knows %s)" % (runtime, ", ".join(sorted(RUNTIMES))), EXIT_MISSING)
    module = importlib.import_module("." + RUNTIMES[runtime], __package__)
    return module.Model(artifact, options)


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


def _run_samples(model, io, arrays):
    import numpy as np

    results = {}
    for s in range(int(io.get("samples", 1))):
        feed = {name: arrays["s%d_i%d" % (s, k)] for k, name in enumerate(io["inputs"])}
        outputs = model.run(feed)
        for k, name in enumerate(io["outputs"]):
            if name not in outputs:
                raise RemoteError("run_failed", "output %r not produced; the model produced %s" % (name, sorted(outputs)), EXIT_FAILED)
            results["s%d_o%d" % (s, k)] = np.asarray(outputs[name])
    return results


def _time_runs(model, io, feed):
    for _ in range(int(io.get("warmup", 5))):
        model.run(feed)
    times = []
    timed_run = getattr(model, "timed_run", None)  # GPU runtimes time themselves (CUDA events)
    for _ in range(int(io.get("runs", 30))):
        if timed_run is not None:
            times.append(timed_run(feed))
            continue
        start = time.perf_counter()
        model.run(feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def command_run(args):
    import numpy as np

    started_at = time.time()  # edgekit's guard starts the runner once it holds the machine's lock
    with open(args.io) as handle:
        io = json.load(handle)
    options = dict(io.get("options", {}))
    options.setdefault("output_names", io["outputs"])
    options.setdefault("input_names", io["inputs"])
    model = load_model(io["runtime"], args.artifact, options)
    with np.load(args.inputs, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    try:
        results = _run_samples(model, io, arrays)
        times = _time_runs(model, io, {name: arrays["s0_i%d" % k] for k, name in enumerate(io["inputs"])})
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError("run_failed", "inference failed: %s: %s" % (type(exc).__name__, exc), EXIT_FAILED)
    np.savez(args.outputs, **results)
    ordered = sorted(times)
    timings = {
        "runner_version": PROTOCOL_VERSION,
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
        "runner_version": PROTOCOL_VERSION,
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
    for label, module in PROBED_MODULES.items():
        try:
            imported = __import__(module, fromlist=["_"])
            report["runtimes"][label] = getattr(imported, "__version__", None) or module_version(module.split(".")[0]) or "available"
        except Exception:
            report["runtimes"][label] = None
    report["trtexec"] = trt_builder.find_trtexec()
    try:
        report["free_disk_bytes"] = shutil.disk_usage(args.path or ".").free
    except OSError:
        report["free_disk_bytes"] = None
    print(json.dumps(report))
    return 0


def make_parser():
    parser = argparse.ArgumentParser(description="edgekit remote runner")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    for name in ("artifact", "io", "inputs", "outputs", "timings"):
        run.add_argument("--" + name, required=True)
    probe = sub.add_parser("probe")
    probe.add_argument("--path", default=".")
    trt_builder.add_commands(sub)
    return parser


COMMANDS = {"run": command_run, "probe": command_probe, "trt-build": trt_builder.command_build, "trt-probe": trt_builder.command_probe}


def main(argv=None):
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except RemoteError as exc:
        return report_error(exc)


if __name__ == "__main__" and __package__:
    sys.exit(main())
