#!/usr/bin/env python3
"""The same artifacts verified on this host (x86-64) and on the emulated aarch64 device, side by side:
worst SQNR per build on the host, under qemu as a Cortex-A76 (ARMv8.2: fp16 arithmetic, dot product) and
as a Cortex-A72 (ARMv8.0, a Pi 4). Needs `edgekit emulator setup aarch64` first. Writes
bench/results/emulator.json and emulator.md; never reads the build cache.

    python bench/emulator_bench.py
    python bench/emulator_bench.py --models super_resolution --builds arm-ncnn:fp16
    python bench/emulator_bench.py --models --model real.onnx:samples.npz --builds arm-ncnn:fp16 --out /tmp/real.json

``--model MODEL:DATA`` adds your own model; DATA (.npy/.npz) gives the verification inputs (and int8's calibration).
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
from edgekit.devices import resolve_devices  # noqa: E402
from edgekit.emulator import find_emulator  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.samples import SAMPLES  # noqa: E402
from edgekit.transport import transport_for  # noqa: E402
from edgekit.types import BuildOptions  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "emulator.json"
DOCS_START, DOCS_END = "<!-- emulator-table:start -->", "<!-- emulator-table:end -->"
PLACES = ["host", "emu:aarch64:cortex-a76", "emu:aarch64:cortex-a72"]
BUILDS = ["arm:fp32", "arm:fp16", "arm:dynamic", "arm:int8", "arm-ncnn:fp32", "arm-ncnn:fp16", "arm-ncnn:int8"]


def bench_one(model: Path, target: str, precision: str, calib: Path, always_data: bool) -> dict:
    """``always_data``: verify on ``calib`` in every precision (real inputs), not only int8."""
    row = {"model": model.stem, "target": target, "precision": precision}
    transports = [transport_for(device) for device in resolve_devices(PLACES)]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        try:
            report = edgekit.build(model, target, precision=precision, calib=calib if precision == "int8" or always_data else None, out_dir=out,
                                   transports=transports, options=BuildOptions(use_cache=False))
        except EdgekitError as exc:
            return {**row, "error": str(exc).splitlines()[0], "cache": {"hit": False}}
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["cache"] = {"hit": bool(report.cache and report.cache.get("hit"))}  # always false: use_cache=False
    row["places"] = {}
    for verification in report.verifications:
        worst = min(verification.outputs, key=lambda o: o.sqnr_db) if verification.outputs else None
        row["places"][verification.device] = {
            "where": verification.where, "cpu": verification.cpu, "status": verification.status, "reason": verification.reason,
            "runtime": verification.runtime, "machine": verification.environment.get("machine"),
            "fp16_arithmetic": verification.environment.get("cpu_fp16_arithmetic"),
            "outputs": [{"name": o.name, "sqnr_db": o.sqnr_db, "cosine": o.cosine, "max_abs_error": o.max_abs_error} for o in verification.outputs],
            "worst_sqnr_db": worst.sqnr_db if worst else None,
            "latency_p50_ms": verification.latency_ms.p50 if verification.latency_ms else None,
            "latency_emulated": bool(verification.latency_ms and verification.latency_ms.emulated),
        }
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | target | precision | host SQNR dB | A76 (emulated) SQNR dB | Δ A76 − host | A72 (emulated) SQNR dB | A76 verification |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['target']} | {row['precision']} | | | | | error: {row['error']} |")
            continue
        sqnr = [row["places"][place]["worst_sqnr_db"] for place in PLACES]
        emulated = row["places"][PLACES[1]]
        status = emulated["status"] + (f" ({emulated['reason'][:80]})" if emulated["status"] != "passed" and not emulated["outputs"] else "")
        delta = f"{sqnr[1] - sqnr[0]:+.1f}" if None not in sqnr[:2] else "-"
        cells = " | ".join(f"{v:.1f}" if v is not None else "-" for v in sqnr[:2])
        lines.append(f"| {row['model']} | {row['target']} | {row['precision']} | {cells} | {delta} | "
                     f"{sqnr[2]:.1f} | {status} |" if sqnr[2] is not None else f"| {row['model']} | {row['target']} | {row['precision']} | "
                     f"{cells} | {delta} | - | {status} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(SAMPLES), help="example models (examples/models)")
    parser.add_argument("--model", action="append", default=[], metavar="MODEL:DATA", help="another model and its input data")
    parser.add_argument("--builds", nargs="+", default=BUILDS, metavar="TARGET:PRECISION")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    models_dir, calib_dir = ROOT / "examples" / "models", ROOT / "examples" / "calib"
    models = [(models_dir / f"{name}.onnx", calib_dir / f"{name}.npy", False) for name in args.models]
    models += [(Path(model), Path(data), True) for model, data in (spec.rsplit(":", 1) for spec in args.model)]
    rows = []
    for model, data, always_data in models:
        for build in args.builds:
            target, precision = build.split(":")
            rows.append(bench_one(model, target, precision, data, always_data))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    emulator = find_emulator("aarch64").manifest
    result = {
        "edgekit_version": edgekit.__version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "emulator": {"qemu": emulator["qemu"]["version"], "python": emulator["python"]["version"], "runtimes": emulator["runtimes"]},
        "note": "worst SQNR over the verification samples at each place; emulated latencies are qemu's speed, not a device's",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {args.out}")
    if args.out == DEFAULT_OUT:
        write_docs_table(table)
    return 0


def write_docs_table(table: str) -> None:
    """The table in docs/emulator.md comes from this run, never from hand."""
    docs = ROOT / "docs" / "emulator.md"
    text = docs.read_text()
    head, rest = text.split(DOCS_START, 1)
    docs.write_text(f"{head}{DOCS_START}\n{table}\n{DOCS_END}{rest.split(DOCS_END, 1)[1]}")


if __name__ == "__main__":
    sys.exit(main())
