#!/usr/bin/env python3
"""Build every real-model zoo model for every target x precision through the edgekit CLI.

    python bench/zoo.py                                   # all models, all cells -> bench/results/zoo.json + zoo.md
    python bench/zoo.py --models mtcnn_rnet resemblyzer --targets android --jobs 2

Fetches the pinned wheels first (pip download, cached in $EDGEKIT_ZOO_DIR, default ~/.cache/edgekit/zoo), exports
the PyTorch models and writes the sample data (bench/zoo/). Every build runs `python -m edgekit.cli build ...
--no-cache --json` in a subprocess with a per-cell timeout; int8 is judged on held-out data (bench/zoo/cells.py).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.zoo import zoo_dir  # noqa: E402
from bench.zoo.cells import SKIPPED, Cell, Outcome, run_cell  # noqa: E402
from bench.zoo.models import MODELS  # noqa: E402
from bench.zoo.prepare import prepare  # noqa: E402
from bench.zoo.table import markdown  # noqa: E402

CELLS = [Cell("android", "fp32"), Cell("android", "int8"), Cell("arm-ncnn", "fp16"), Cell("arm-ncnn", "int8"), Cell("ios", "fp16")]
GPU_CELLS = [Cell("jetson", "fp16"), Cell("jetson", "int8")]
TARGETS = sorted({c.target for c in CELLS + GPU_CELLS})


def cuda_gpu() -> str | None:
    """The first GPU nvidia-smi names, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    names = done.stdout.strip().splitlines() if done.returncode == 0 else []
    return names[0] if names else None


def tool_versions() -> dict:
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "doctor", "--json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:]}
    info = json.loads(done.stdout)
    return {"backends": {name: state.get("tools") or state.get("problem") for name, state in info["backends"].items()},
            "host_runtimes": info.get("host_runtimes")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=TARGETS)
    parser.add_argument("--jobs", type=int, default=1, help="cells built at once (default 1; each build uses several cores)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per cell (default 900)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zoo.json")
    parser.add_argument("--work", type=Path, help="build folders (default $EDGEKIT_ZOO_DIR/runs)")
    args = parser.parse_args()

    zoo = zoo_dir()
    started = time.perf_counter()
    prepared = prepare(args.models, zoo)
    prepare_seconds = round(time.perf_counter() - started, 2)
    print(f"prepared {len(prepared)} models in {prepare_seconds} s ({zoo})", file=sys.stderr)
    gpu = cuda_gpu()
    work = args.work or zoo / "runs"
    jobs = [(p, c) for p in prepared for c in CELLS + (GPU_CELLS if gpu else []) if c.target in args.targets]
    skipped = [Outcome(p.model.name, c.target, c.precision, SKIPPED, "no CUDA GPU")
               for p in prepared for c in ([] if gpu else GPU_CELLS) if c.target in args.targets]

    def one(job) -> Outcome:
        p, c = job
        outcome = run_cell(p, c, work, args.timeout)
        sqnr = f" {outcome.worst_sqnr_db:.1f} dB" if isinstance(outcome.worst_sqnr_db, float) else ""
        print(f"{p.model.name:<18} {c.label:<16} {outcome.status}{sqnr} {outcome.detail[:120]} ({outcome.seconds} s)", file=sys.stderr, flush=True)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(one, jobs)) + skipped
    import edgekit

    result = {
        "edgekit_version": edgekit.__version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "cuda_gpu": gpu},
        "tools": tool_versions(),
        "zoo_dir": str(zoo),
        "prepare_seconds": prepare_seconds,
        "models": {p.model.name: {"origin": p.model.origin, "onnx": str(p.onnx), "input": p.model.input_name,
                                  "input_shape": list(p.model.input_shape), "data": p.model.dataset.describe,
                                  "prepare_seconds": p.seconds, "export_check": p.export} for p in prepared},
        "cells": [c.label for c in CELLS + GPU_CELLS if c.target in args.targets],
        "total_seconds": round(time.perf_counter() - started, 1),
        "rows": [o.to_dict() for o in outcomes],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result["rows"], [c for c in CELLS + GPU_CELLS if c.target in args.targets], [p.model.name for p in prepared])
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
