#!/usr/bin/env python3
"""Build the shipped example models for a target in each precision; write per-stage times,
artifact sizes, verification metrics and host latency to JSON (and a Markdown table).

    python bench/build_bench.py                          # android, all precisions -> bench/results/tflite-android.json
    python bench/build_bench.py --target arm-ncnn --precision fp32 fp16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.samples import SAMPLES  # noqa: E402


def bench_one(model: Path, target: str, precision: str, calib: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        try:
            report = edgekit.build(model, target, precision=precision, calib=calib if precision == "int8" else None, out_dir=out)
        except EdgekitError as exc:
            return {"model": model.stem, "target": target, "precision": precision, "error": str(exc).splitlines()[0]}
        total = time.perf_counter() - started
    verification = report.verification
    return {
        "model": model.stem,
        "target": target,
        "backend": report.backend,
        "precision": precision,
        "total_seconds": round(total, 3),
        "stages": {s.name: s.seconds for s in report.stages},
        "artifact_bytes": report.artifact_bytes,
        "source_bytes": model.stat().st_size,
        "verification": verification.status,
        "reason": verification.reason,
        "outputs": [{"name": o.name, "cosine": o.cosine, "sqnr_db": o.sqnr_db, "max_abs_error": o.max_abs_error} for o in verification.outputs],
        "latency_ms": verification.latency_ms.to_dict() if verification.latency_ms else None,
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| model | precision | size KiB | convert+quantize s | SQNR dB | cosine | p50 ms | verification |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['precision']} | | | | | | error: {row['error']} |")
            continue
        worst = min(row["outputs"], key=lambda o: o["sqnr_db"]) if row["outputs"] else {"sqnr_db": float("nan"), "cosine": float("nan")}
        stage_time = sum(v for k, v in row["stages"].items() if k in ("convert", "quantize"))
        p50 = row["latency_ms"]["p50"] if row["latency_ms"] else float("nan")
        lines.append(f"| {row['model']} | {row['precision']} | {row['artifact_bytes'] / 1024:.1f} | {stage_time:.1f} | "
                     f"{worst['sqnr_db']:.1f} | {worst['cosine']:.5f} | {p50:.3f} | {row['verification']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="android")
    parser.add_argument("--precision", nargs="+", default=["fp32", "fp16", "dynamic", "int8"])
    parser.add_argument("--models", nargs="+", default=list(SAMPLES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models_dir = ROOT / "examples" / "models"
    calib_dir = ROOT / "examples" / "calib"
    rows = [bench_one(models_dir / f"{name}.onnx", args.target, precision, calib_dir / f"{name}.npy")
            for name in args.models for precision in args.precision]
    result = {
        "edgekit_version": edgekit.__version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "host latency through the device runner on this machine (x86-64), not a phone; other work may share the CPU",
        "rows": rows,
    }
    out = args.out or ROOT / "bench" / "results" / f"{args.target}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
