#!/usr/bin/env python3
"""Build the sample models as TensorRT engines on this host's GPU (fp32, fp16, int8 via QDQ), twice each so the
second build shows the timing cache at work; write build times, engine sizes, verification metrics, GPU latency
(CUDA events) and GPU memory to JSON.

Needs an NVIDIA GPU and ``pip install 'edgekit[tensorrt]' cuda-python``; on a host without one every row records
the error edgekit gives (no numbers are invented). Not run in CI.

    python bench/tensorrt_bench.py                       # -> bench/results/tensorrt-<gpu>.json
    python bench/tensorrt_bench.py --precision fp16 --runs 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import edgekit  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.modelio import load_model  # noqa: E402
from edgekit.remote import cuda  # noqa: E402
from edgekit.samples import SAMPLES, write_sample  # noqa: E402
from edgekit.types import BuildOptions  # noqa: E402


def calibration(model: Path, folder: Path, count: int = 64) -> Path:
    rng = np.random.default_rng(7)
    arrays = {s.name: rng.standard_normal((count, *s.shape[1:])).astype(np.float32) for s in load_model(model).inputs}
    path = folder / f"{model.stem}_calib.npz"
    np.savez(path, **arrays)
    return path


def bench_one(model: Path, target: str, precision: str, calib: Path, runs: int, attempt: int) -> dict:
    row = {"model": model.stem, "target": target, "precision": precision, "attempt": attempt}
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        try:
            # engines for this host's GPU, measured here: the Jetson profile supplies options, not the GPU
            options = BuildOptions(latency_runs=runs, use_cache=False, allow_foreign_gpu=True)
            report = edgekit.build(model, target, precision=precision, calib=calib if precision == "int8" else None, out_dir=out, options=options)
        except EdgekitError as exc:
            return {**row, "error": str(exc).splitlines()[0], "exit_code": exc.exit_code, "cache": {"hit": False}}
        row["total_s"] = round(time.perf_counter() - started, 3)
    stages = {s.name: s for s in report.stages}
    engine = stages.get("engine")
    verification = report.verification
    return {
        **row,
        "engine_bytes": report.artifact_bytes,
        "engine_build_s": engine.seconds if engine else None,
        "tensorrt": engine.tool_version if engine else None,
        "gpu": engine.detail.get("gpu") if engine else None,
        "compute_capability": engine.detail.get("compute_capability") if engine else None,
        "timing_cache_hit": engine.detail.get("timing_cache_hit") if engine else None,
        "qdq_min_sqnr_db": stages["quantize"].detail.get("min_sqnr_db") if "quantize" in stages else None,
        "status": verification.status,
        "cache": {"hit": bool(report.cache and report.cache.get("hit"))},  # always false: use_cache=False
        "min_sqnr_db": min((o.sqnr_db for o in verification.outputs), default=None),
        "min_cosine": min((o.cosine for o in verification.outputs), default=None),
        "latency_ms": {k: getattr(verification.latency_ms, k) for k in ("p50", "p90", "p99", "mean")} if verification.latency_ms else None,
        "environment": verification.environment,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="jetson")
    parser.add_argument("--precision", nargs="+", default=["fp32", "fp16", "int8"])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("EDGEKIT_TRT_TIMING_DIR", tempfile.mkdtemp(prefix="edgekit-trt-timing-"))  # cold first build
    devices = cuda.cuda_devices()
    rows = []
    with tempfile.TemporaryDirectory() as scratch_text:
        scratch = Path(scratch_text)
        for name in SAMPLES:
            model = write_sample(name, scratch)
            calib = calibration(model, scratch)
            for precision in args.precision:
                for attempt in (1, 2):  # the second build reuses the timing cache written by the first
                    rows.append(bench_one(model, args.target, precision, calib, args.runs, attempt))
                    print(json.dumps(rows[-1]))
    gpu = devices[0]["name"] if devices else "no-gpu"
    out = args.out or ROOT / "bench" / "results" / f"tensorrt-{re.sub(r'[^a-z0-9]+', '-', gpu.lower()).strip('-')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"edgekit": edgekit.__version__, "python": platform.python_version(), "machine": platform.machine(),
                               "devices": devices, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
