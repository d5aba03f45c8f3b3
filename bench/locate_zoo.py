#!/usr/bin/env python3
"""Locate and per-layer fallback on the real-model zoo's failing cells (issue 12).

For each cell: `edgekit build --fallback none` (the build as it was: does it fail, and which node is named?) and
`edgekit build --fallback auto` (does it pass, what stays float, what does it cost?). int8 builds verify on the
head of their own calibration set, so both builds are judged again on the held-out verify.npz with `edgekit verify`
(a copy of the build whose report names verify.npz), as bench/zoo does. Models and data come from the zoo cache
($EDGEKIT_ZOO_DIR, default ~/.cache/edgekit/zoo, filled by `python bench/zoo.py`); nothing is downloaded here.

    python bench/locate_zoo.py                  # every cell below -> bench/results/zoo-fallback.json + .md
    python bench/locate_zoo.py --cells mtcnn_rnet/arm-ncnn/int8
    python bench/locate_zoo.py --readme         # only rewrite the README table from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ZOO = Path(os.environ.get("EDGEKIT_ZOO_DIR", Path.home() / ".cache" / "edgekit" / "zoo"))
VERIFICATION = 16
README_START, README_END = "<!-- zoo-fallback:start -->", "<!-- zoo-fallback:end -->"
#: model -> (ONNX file under the zoo cache, sample data folder)
MODELS = {
    "mtcnn_pnet": ("export/mtcnn_pnet.onnx", "mtcnn_frames-image"),
    "mtcnn_rnet": ("export/mtcnn_rnet.onnx", "face_crops24-image"),
    "mtcnn_onet": ("export/mtcnn_onet.onnx", "face_crops48-image"),
    "ddddocr_det": ("extracted/ddddocr/ddddocr/common_det.onnx", "text_scenes416-images"),
    # the onnx wheel's light models (constant weights: op coverage, not accuracy)
    "light_inception_v1": ("onnx:light_inception_v1.onnx", "imagenet224-data_0"),
    "light_squeezenet": ("onnx:light_squeezenet.onnx", "imagenet224-data_0"),
}
#: the cells that failed verification in the zoo baseline (bench/zoo/BASELINE.md) and that run on this host
CELLS = ["mtcnn_pnet/arm-ncnn/int8", "mtcnn_rnet/arm-ncnn/int8", "mtcnn_onet/arm-ncnn/int8", "ddddocr_det/android/int8",
         "mtcnn_rnet/android/int8", "light_inception_v1/android/int8", "light_squeezenet/android/fp32"]


def _model_path(name: str) -> Path:
    if name.startswith("onnx:"):
        import onnx

        return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / name.split(":", 1)[1]
    return ZOO / name


def run(command: list[str], timeout: float = 3600) -> tuple[int, dict | None, str, float]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    try:
        report = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        report = None
    return done.returncode, report, done.stderr[-1500:], round(time.perf_counter() - started, 1)


def heldout(out: Path, data: Path, model: Path) -> dict:
    """`edgekit verify` on a copy of the build whose report names the held-out samples."""
    copy = out.parent / f"{out.name}-heldout"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".edgekit-work-*"))
    report = json.loads((copy / "edgekit-report.json").read_text())
    report["verification"].update(input_source=f"calibration:{data}", samples=VERIFICATION)
    (copy / "edgekit-report.json").write_text(json.dumps(report))
    code, checked, stderr, _ = run([sys.executable, "-m", "edgekit.cli", "verify", str(copy), "--model", str(model), "--json"])
    if checked is None:
        return {"status": f"error {code}", "detail": stderr[-300:]}
    verification = checked["verification"]
    return {"status": verification["status"], "min_sqnr_db": _worst(verification), "samples": verification["samples"]}


def _worst(verification: dict) -> float | None:
    values = [o["sqnr_db"] for o in verification.get("outputs", []) if isinstance(o.get("sqnr_db"), (int, float))]
    return round(min(values), 2) if values else None


def build(model: Path, data: Path, target: str, precision: str, out: Path, fallback: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    sample = np.load(data / ("calib.npz" if precision == "int8" else "verify.npz"))
    shapes = [f"{name}=1x{'x'.join(str(d) for d in sample[name].shape[1:])}" for name in sample.files]
    command = [sys.executable, "-m", "edgekit.cli", "build", str(model), "--target", target, "--precision", precision,
               "--calib", str(data / ("calib.npz" if precision == "int8" else "verify.npz")), "--samples", str(VERIFICATION),
               "--runs", "10", "--warmup", "2", "--no-cache", "--json", "-o", str(out), "--fallback", fallback,
               *[arg for shape in shapes for arg in ("--input-shape", shape)]]
    code, report, stderr, seconds = run(command)
    if report is None:
        return {"exit_code": code, "error": stderr[-600:], "seconds": seconds}
    verification = report["verification"]
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    quantization = report.get("quantization") or {}
    result = {"exit_code": code, "seconds": seconds, "status": verification["status"], "min_sqnr_db": _worst(verification),
              "reason": (verification.get("reason") or "")[:300], "artifact_bytes": report["artifact_bytes"],
              "first_divergence": verification.get("first_divergence"), "locate": verification.get("locate"),
              "locate_seconds": stages.get("locate"), "fallback_seconds": stages.get("fallback"),
              "float_layers": quantization.get("float_layers", []), "size_cost_bytes": quantization.get("size_cost_bytes"),
              "rounds": quantization.get("rounds", []), "stopped": quantization.get("stopped"),
              "parameters_in_float": quantization.get("parameters_in_float")}
    if precision == "int8":
        result["heldout"] = heldout(out, data / "verify.npz", model)
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| cell | without fallback (held-out) | first divergence | with `--fallback auto` (held-out) | kept float | size cost | locate + fallback s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        before, after = r["none"], r["auto"]
        first = before.get("first_divergence") or (before.get("rounds") or [{}])[0].get("first_divergence")
        named = f"`{first['node']}` ({first['op']}), {first.get('input_sqnr_db')} → {first['sqnr_db']} dB" if first else (
            (before.get("locate") or {}).get("reason") or (before.get("locate") or {}).get("status") or "–")
        floats = ", ".join(f"`{f['node']}`" for f in after.get("float_layers", [])[:4]) + (" …" if len(after.get("float_layers", [])) > 4 else "")
        cost = f"{after['size_cost_bytes'] / 1024:+.1f} KiB" if after.get("size_cost_bytes") else "–"
        seconds = sum(x or 0 for x in (after.get("locate_seconds"), after.get("fallback_seconds")))
        lines.append(f"| {r['cell']} | {_verdict(before)} | {named} | {_verdict(after)} | {floats or '–'} | {cost} | {seconds:.0f} |")
    return "\n".join(lines) + "\n"


def _verdict(result: dict) -> str:
    if "error" in result:
        return f"error {result['exit_code']}"
    checked = result.get("heldout") or result
    sqnr = checked.get("min_sqnr_db")
    return f"{checked['status']}" + (f" {sqnr} dB" if sqnr is not None else "")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", nargs="*", default=CELLS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgekit-locate-zoo"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zoo-fallback.json")
    parser.add_argument("--readme", action="store_true", help="write the table from --out into README.md and stop")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = text.index(README_START) + len(README_START), text.index(README_END)
        readme.write_text(text[:start] + "\n" + markdown(results) + text[end:])
        return 0
    for cell in args.cells:
        name, target, precision = cell.split("/")
        onnx_file, data = MODELS[name]
        model, folder = _model_path(onnx_file), ZOO / "data" / data
        if not model.is_file():
            print(f"{cell}: {model} missing (run python bench/zoo.py first)", file=sys.stderr)
            continue
        entry = {"cell": cell, "none": build(model, folder, target, precision, args.work / cell / "none", "none"),
                 "auto": build(model, folder, target, precision, args.work / cell / "auto", "auto")}
        results = [r for r in results if r["cell"] != cell] + [entry]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(results))
        print(markdown([entry]).splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
