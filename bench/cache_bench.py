#!/usr/bin/env python3
"""Cold build vs cached rebuild of the same model, timed end to end through the CLI (process start included).

The one benchmark that reads the build cache, on purpose: it measures the cache. It uses its own empty cache
folder, and every run records whether it was a hit (the cold build must miss, the rebuilds must hit).

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


def timed(argv: list[str], env: dict[str, str], hit: bool) -> float:
    """Seconds for one build; it must be a cache hit (or miss) as expected."""
    started = time.perf_counter()
    result = subprocess.run(argv, check=True, capture_output=True, env=env, text=True)
    seconds = time.perf_counter() - started
    if json.loads(result.stdout)["cache"]["hit"] is not hit:
        raise SystemExit(f"expected cache.hit {hit}: {' '.join(argv)}")
    return seconds


def main() -> int:
    rows = []
    for model, target, precision in CASES:
        with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "EDGEKIT_CACHE_DIR": cache_dir}
            argv = [sys.executable, "-m", "edgekit.cli", "build", str(ROOT / "examples" / "models" / f"{model}.onnx"),
                    "--target", target, "--precision", precision, "-o", out, "--json"]
            cold = timed(argv, env, hit=False)
            cached = [timed(argv, env, hit=True) for _ in range(REPEATS)]
        rows.append({"measures": "build cache", "model": model, "target": target, "precision": precision,
                     "cold_cache_hit": False, "cached_cache_hit": True, "cold_seconds": round(cold, 3),
                     "cached_seconds_median": round(statistics.median(cached), 3), "cached_seconds_all": [round(c, 3) for c in cached],
                     "speedup": round(cold / statistics.median(cached), 1)})
        print(f"{model:<18} {target:<8} {precision:<5} cold {cold:6.2f} s   cached {statistics.median(cached):5.2f} s")
    out_path = ROOT / "bench" / "results" / "cache.json"
    out_path.write_text(json.dumps({"note": "wall time of `edgekit build` subprocesses, Python start included; 2-core x86-64 host; "
                                             "measures the build cache on purpose: cold = empty cache (a miss), cached = hits", "rows": rows}, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
