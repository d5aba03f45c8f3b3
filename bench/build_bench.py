#!/usr/bin/env python3
"""Build the shipped example models for a target in each precision; write per-stage times,
artifact sizes, verification metrics and host latency to JSON (and a Markdown table).

Every build runs for real: the build cache is neither read (use_cache=False) nor written (a temporary cache
folder), and each row records ``cache.hit`` (always false) so a table can prove it.

    python bench/build_bench.py                          # android, the target's precisions -> bench/results/android.json
    python bench/build_bench.py --target arm-ncnn --precision fp32 fp16
    python bench/readme_tables.py                        # then: the README's tables from the JSON
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
from edgekit.profiles import resolve_target  # noqa: E402
from edgekit.samples import SAMPLES  # noqa: E402
from edgekit.types import BuildOptions  # noqa: E402


def bench_one(model: Path, target: str, precision: str, calib: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        try:
            report = edgekit.build(model, target, precision=precision, calib=calib if precision == "int8" else None, out_dir=out,
                                   options=BuildOptions(use_cache=False))
        except EdgekitError as exc:
            return {"model": model.stem, "target": target, "precision": precision, "error": str(exc).splitlines()[0],
                    "cache": {"hit": False}}
        total = time.perf_counter() - started
    hit = bool(report.cache and report.cache.get("hit"))
    if hit:
        raise SystemExit(f"{model.stem} {precision}: restored from the build cache; a benchmark must build")
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
        "cache": {"hit": hit},
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
    parser.add_argument("--precision", nargs="+", help="default: every precision the target offers")
    parser.add_argument("--models", nargs="+", default=list(SAMPLES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models_dir = ROOT / "examples" / "models"
    calib_dir = ROOT / "examples" / "calib"
    load_before = os.getloadavg()
    precisions = args.precision or [p for p in ("fp32", "fp16", "dynamic", "int8") if p in resolve_target(args.target).precisions]
    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["EDGEKIT_CACHE_DIR"] = cache_dir  # not the user's cache: nothing is read from it or left in it
        rows = [bench_one(models_dir / f"{name}.onnx", args.target, precision, calib_dir / f"{name}.npy")
                for name in args.models for precision in precisions]
    result = {
        "edgekit_version": edgekit.__version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_before": [round(x, 1) for x in load_before],
                    "load_average_after": [round(x, 1) for x in os.getloadavg()]},
        "note": "host latency through the device runner on this machine (x86-64), not a phone; other work may share the CPU; "
                "every row built for real (build cache off)",
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
