#!/usr/bin/env python3
"""Cold build vs cached rebuild of the same model, timed end to end through the CLI (process start included).

    python bench/cache_bench.py    # -> bench/results/cache.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [("super_resolution", "arm", "fp16"), ("tiny_cnn", "android", "fp32"), ("transformer_block", "arm", "fp32")]
REPEATS = 5


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> int:
    rows = []
    for model, target, precision in CASES:
        with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "EDGEKIT_CACHE_DIR": cache_dir}
            argv = [sys.executable, "-m", "edgekit.cli", "build", str(ROOT / "examples" / "models" / f"{model}.onnx"),
                    "--target", target, "--precision", precision, "-o", out, "--quiet"]
            cold = timed(argv, env)
            cached = [timed(argv, env) for _ in range(REPEATS)]
        rows.append({"model": model, "target": target, "precision": precision, "cold_seconds": round(cold, 3),
                     "cached_seconds_median": round(statistics.median(cached), 3), "cached_seconds_all": [round(c, 3) for c in cached],
                     "speedup": round(cold / statistics.median(cached), 1)})
        print(f"{model:<18} {target:<8} {precision:<5} cold {cold:6.2f} s   cached {statistics.median(cached):5.2f} s")
    out_path = ROOT / "bench" / "results" / "cache.json"
    out_path.write_text(json.dumps({"note": "wall time of `edgekit build` subprocesses, Python start included; 2-core x86-64 host", "rows": rows}, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
